from __future__ import annotations

from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "tracing.ingest"
    label = "ingest"
    verbose_name = "Ingest: spans, audit records, dead letters"
