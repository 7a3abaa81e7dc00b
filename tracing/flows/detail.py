"""One flow as its page and `GET /api/v1/flows/<id>` show it: the summary, the facts the
status came from, the definition's steps with their states, and who owns where it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracing.flows.models import FlowInstance, FlowStep
from tracing.flows.selectors import FlowFacts, flows_facts


@dataclass
class Owner:
    """Who answers for where the flow stopped: the step's system, else the definition."""

    team: str
    email: str
    webhook: str
    runbook_url: str
    system: str


@dataclass
class FlowDetail:
    instance: FlowInstance
    facts: FlowFacts
    owner: Owner | None
    steps: list[dict[str, Any]]  # the definition's steps in order, each with its state


def flow_detail(correlation_id: str, *, payloads: bool = False) -> FlowDetail | None:
    """Everything the flow page and `GET /api/v1/flows/<id>` show, or None for no such flow."""
    if "\x00" in correlation_id:  # no correlation ID holds NUL: PostgreSQL text cannot
        return None
    instance = (
        FlowInstance.objects.select_related("definition__owner")
        .filter(correlation_id=correlation_id)
        .first()
    )
    if instance is None:
        return None
    facts = flows_facts([correlation_id], payloads=payloads)[correlation_id]
    steps: list[dict[str, Any]] = []
    owner = None
    if instance.definition is not None:
        definition_steps = list(instance.definition.steps.select_related("system__owner"))
        steps = [{"key": step.key, **instance.steps.get(step.key, {})} for step in definition_steps]
        owner = _owner(instance, definition_steps)
    return FlowDetail(instance=instance, facts=facts, owner=owner, steps=steps)


def _owner(instance: FlowInstance, steps: list[FlowStep]) -> Owner:
    stopped = next((step for step in steps if step.key == instance.stopped_at), None)
    definition = instance.definition
    assert definition is not None
    if stopped is not None:
        team = stopped.system.owner
        return Owner(
            team.team, team.email, team.webhook_url, stopped.system.runbook_url, stopped.system.name
        )
    team = definition.owner
    return Owner(team.team, team.email, team.webhook_url, definition.runbook_url, "")
