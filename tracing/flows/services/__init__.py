"""The operations that change flows: definitions, the summary, missing runs."""

from __future__ import annotations

from tracing.flows.services.definitions import (
    ImportedDefinitions,
    flow_definitions_export,
    flow_definitions_import,
)

__all__ = ["ImportedDefinitions", "flow_definitions_export", "flow_definitions_import"]
