"""Reads of dead letters shared by the console, the API and bulk replay."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from tracing.flows.models import FlowInstance
from tracing.ingest.models import DeadLetter


def dead_letters_matching(wanted: dict[str, Any]) -> QuerySet[DeadLetter]:
    """Dead letters by system, flow definition, state, error text and failed since; an empty
    or missing filter filters nothing."""
    letters = DeadLetter.objects.all()
    if wanted.get("system"):
        letters = letters.filter(system=wanted["system"])
    if wanted.get("definition"):
        flows = FlowInstance.objects.filter(definition__name=wanted["definition"])
        letters = letters.filter(correlation_id__in=flows.values("correlation_id"))
    if wanted.get("state"):
        letters = letters.filter(state=wanted["state"])
    if wanted.get("error"):
        letters = letters.filter(error__icontains=wanted["error"])
    if wanted.get("since"):
        letters = letters.filter(last_failed_at__gte=wanted["since"])
    return letters
