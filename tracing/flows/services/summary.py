"""The flow summary: drained from what ingest marked, recomputed from facts, never on a page view.

Ingest appends (trace, correlation, message) marks to ingest_flowtouch in the same
transaction as its rows. `flows_summarize` takes them with FOR UPDATE SKIP LOCKED (so
several workers drain side by side and nothing is lost if the broker hiccups), joins the
touched traces to their flows and recomputes each affected flow from all its facts.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import datetime

from django.db import connection, transaction

from tracing.flows.models import FlowDefinition, FlowInstance, FlowKey
from tracing.flows.selectors import FlowFacts, flows_facts
from tracing.flows.status import Fact, Summary, step_done_by, summarize
from tracing.flows.stitching import Touch, stitch, trace_ranges_extend

BATCH = 2000


# One summarizer at a time: stitching reads memberships another run may be writing, and
# under READ COMMITTED two runs could each miss the other's half of a link.
SUMMARIZER_LOCK = 0x7469_6465_6C69_6E65  # "tideline"
RUN_SECONDS = 20.0  # then let beat start a fresh run, so one worker is not held forever


def flows_summarize(*, now: datetime, batch: int = BATCH) -> int:
    """Drain the marks ingest left (for up to RUN_SECONDS); the number of flow updates made."""
    updated, started = 0, time.monotonic()
    while time.monotonic() - started < RUN_SECONDS:
        with transaction.atomic():
            if not _summarizer_lock():
                return updated  # another run is draining
            touches = _touches_take(batch)
            if not touches:
                return updated
            updated += flows_recompute(correlation_ids=stitch(touches), now=now)
    return updated


def _summarizer_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SUMMARIZER_LOCK])
        return bool(cursor.fetchone()[0])


def _touches_take(batch: int) -> list[Touch]:
    # ARRAY(...) runs the locking subquery once; as `IN (subquery)` the planner may re-run it
    # per row when the table's statistics say it is empty, and take far more than `batch`.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            DELETE FROM ingest_flowtouch WHERE id = ANY(ARRAY(
                SELECT id FROM ingest_flowtouch ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
            )) RETURNING trace_id, correlation_id, message_id, first_start, last_start
            """,
            [batch],
        )
        rows = cursor.fetchall()
        trace_ranges_extend(
            [(bytes(trace), first, last) for trace, _, _, first, last in rows if trace and first]
        )
        return [
            (bytes(trace) if trace else None, correlation, message)
            for trace, correlation, message, _, _ in rows
        ]


def flows_recompute(*, correlation_ids: Collection[str], now: datetime) -> int:
    """Recompute these flows from their facts (idempotent: safe to run any number of times)."""
    if not correlation_ids:
        return 0
    _flows_lock(correlation_ids)
    facts = flows_facts(correlation_ids)
    pinned = dict(
        FlowInstance.objects.filter(correlation_id__in=list(correlation_ids)).values_list(
            "correlation_id", "definition_id"
        )
    )
    definitions = _Definitions(set(pinned.values()) - {None})
    instances, keys = [], []
    for correlation_id, flow in facts.items():
        flow_facts = flow.facts()
        if not flow_facts:
            continue
        definition = definitions.by_id(pinned.get(correlation_id)) or definitions.match(flow_facts)
        instances.append(_instance(flow, flow_facts, definition, now))
        keys += [
            FlowKey(value=v, name=n, correlation_id=correlation_id) for n, v in flow.business_keys
        ]
    _instances_save(instances)
    FlowKey.objects.bulk_create(keys, ignore_conflicts=True)
    return len(instances)


def _flows_lock(correlation_ids: Collection[str]) -> None:
    """Two workers recomputing one flow take turns, so an older read never overwrites a newer."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT pg_advisory_xact_lock(key) FROM (
                SELECT DISTINCT hashtextextended(id, 0) AS key FROM unnest(%s::text[]) AS id
                ORDER BY key
            ) AS keys
            """,
            [sorted(correlation_ids)],
        )


class _Definitions:
    """The current definitions (to match new flows) and the pinned versions flows started under."""

    def __init__(self, pinned_ids: set[int]) -> None:
        query = FlowDefinition.objects.prefetch_related("steps__system").select_related("owner")
        self.current = list(query.filter(is_current=True).order_by("name"))
        known = {definition.id for definition in self.current}
        self.pinned = {d.id: d for d in query.filter(id__in=pinned_ids - known)}
        self.pinned.update({definition.id: definition for definition in self.current})

    def by_id(self, definition_id: int | None) -> FlowDefinition | None:
        return self.pinned.get(definition_id) if definition_id else None

    def match(self, facts: list[Fact]) -> FlowDefinition | None:
        """The definition whose first step the flow's earliest fact shows."""
        for fact in sorted(facts, key=lambda fact: fact.at):
            for definition in self.current:
                first = next(s for s in definition.steps.all() if s.key == definition.starts_with)
                if step_done_by(first, fact):
                    return definition
        return None


def _instance(
    flow: FlowFacts, facts: list[Fact], definition: FlowDefinition | None, now: datetime
) -> FlowInstance:
    steps = list(definition.steps.all()) if definition else None
    starts_with = definition.starts_with if definition else ""
    summary: Summary = summarize(facts=facts, steps=steps, starts_with=starts_with, now=now)
    return FlowInstance(
        correlation_id=flow.correlation_id, definition=definition, status=summary.status,
        started_at=summary.started_at, last_activity_at=summary.last_activity_at,
        completed_at=summary.completed_at, stopped_at=summary.stopped_at, last_step=summary.last_step,
        sentence=summary.sentence, due_at=summary.due_at,
        steps={key: state.as_json() for key, state in summary.steps.items()},
        steps_done=[key for key, state in summary.steps.items() if state.state == "done"],
        systems=sorted({fact.system for fact in facts}), deadline_missed=summary.deadline_missed,
        span_count=len(flow.spans), record_count=len(flow.records),
        dead_letter_count=len(flow.dead_letters), trace_count=len(flow.traces), updated_at=now,
    )  # fmt: skip


_UPDATED_FIELDS = [
    "definition", "status", "started_at", "last_activity_at", "completed_at", "stopped_at", "last_step",
    "sentence", "due_at", "steps", "steps_done", "systems", "deadline_missed", "span_count", "record_count",
    "dead_letter_count", "trace_count", "updated_at",
]  # fmt: skip


def _instances_save(instances: list[FlowInstance]) -> None:
    FlowInstance.objects.bulk_create(
        instances,
        update_conflicts=True,
        unique_fields=["correlation_id"],
        update_fields=_UPDATED_FIELDS,
    )


def flows_mark_stalled(*, now: datetime) -> int:
    """Beat: flows whose next step fell due are recomputed, which makes them stalled."""
    with transaction.atomic():
        due = list(
            FlowInstance.objects.filter(status=FlowInstance.Status.IN_PROGRESS, due_at__lte=now)
            .order_by("due_at")
            .values_list("correlation_id", flat=True)[:BATCH]
        )
        return flows_recompute(correlation_ids=due, now=now)
