"""One flow as its page and `GET /api/v1/flows/<id>` show it: the summary, the facts the
status came from, the definition's steps with their states, and who owns where it stopped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console import rows
from console.rows import reads_cursor
from tracing.flows.models import FlowDefinition, FlowInstance
from tracing.flows.models import Owner as Team
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
    with reads_cursor() as cursor:
        cursor.execute(_INSTANCE_SQL, [correlation_id])
        found = cursor.fetchone()
        if found is None:
            return None
        instance = _instance(found)
        steps_read: list[_Step] = []
        if instance.definition_id is not None:
            cursor.execute(_STEPS_SQL, [instance.definition_id])
            steps_read = [_Step(*row) for row in cursor.fetchall()]
    facts = flows_facts([correlation_id], payloads=payloads)[correlation_id]
    steps: list[dict[str, Any]] = []
    owner = None
    if instance.definition is not None:
        steps = [{"key": step.key, **instance.steps.get(step.key, {})} for step in steps_read]
        owner = _owner(instance, steps_read)
    return FlowDetail(instance=instance, facts=facts, owner=owner, steps=steps)


# The summary with its definition and the definition's owner, as
# `select_related("definition__owner")` reads them, in one prepared statement.
_INSTANCE_SQL = f"""
    SELECT {rows.columns(FlowInstance, "i")}, {rows.columns(FlowDefinition, "d")},
           {rows.columns(Team, "o")}
    FROM flows_flowinstance i
    LEFT JOIN flows_flowdefinition d ON d.id = i.definition_id
    LEFT JOIN flows_owner o ON o.id = d.owner_id
    WHERE i.correlation_id = %s
"""  # noqa: S608 - column names from the models
_STEPS_SQL = """
    SELECT s.key, y.name, y.runbook_url, o.team, o.email, o.webhook_url
    FROM flows_flowstep s JOIN flows_system y ON y.id = s.system_id JOIN flows_owner o ON o.id = y.owner_id
    WHERE s.definition_id = %s ORDER BY s.position
"""


_DEFINITION_AT = rows.width(FlowInstance)  # where the definition's columns begin in the row
_OWNER_AT = _DEFINITION_AT + rows.width(FlowDefinition)


def _instance(row: tuple[Any, ...]) -> FlowInstance:
    instance = rows.instance(FlowInstance, row[:_DEFINITION_AT])
    if instance.definition_id is not None:
        definition = rows.instance(FlowDefinition, row[_DEFINITION_AT:_OWNER_AT])
        definition.owner = rows.instance(Team, row[_OWNER_AT:])
        instance.definition = definition
    return instance


@dataclass
class _Step:
    """A definition's step as the owner question needs it: its system and who answers for it."""

    key: str
    system: str
    runbook_url: str
    team: str
    email: str
    webhook: str


def _owner(instance: FlowInstance, steps: list[_Step]) -> Owner:
    stopped = next((step for step in steps if step.key == instance.stopped_at), None)
    definition = instance.definition
    assert definition is not None
    if stopped is not None:
        return Owner(
            stopped.team, stopped.email, stopped.webhook, stopped.runbook_url, stopped.system
        )
    team = definition.owner
    return Owner(team.team, team.email, team.webhook_url, definition.runbook_url, "")
