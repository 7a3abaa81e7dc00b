"""The flow summary: drained from what ingest marked, recomputed from facts, never on a page view.

Ingest appends (trace, correlation, message) marks to ingest_flowtouch in the same
transaction as its rows. `flows_summarize` takes them with FOR UPDATE SKIP LOCKED (so
several workers drain side by side and nothing is lost if the broker hiccups), joins the
touched traces to their flows and recomputes each affected flow from all its facts.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from django.db import connection, transaction

from tracing.flows.arrays import text_array
from tracing.flows.digests import (
    SpanDigest,
    flows_beside_spans,
    span_digest,
    span_digests_load,
    span_digests_save,
)
from tracing.flows.models import FlowDefinition, FlowInstance, FlowStep
from tracing.flows.selectors import FlowFacts, fast_times, flows_facts, span_fact
from tracing.flows.services.hours import Counted, counted, counted_now, flow_hours_shift
from tracing.flows.status import Fact, Summary, step_done_by, summarize
from tracing.flows.stitching import Touch, stitch, trace_ranges_extend
from tracing.ingest.models import FlowTouch

BATCH = 5000  # marks one transaction takes: a flow touched by several of them is recomputed once
FACTS_PER_READ = 1000  # flows whose facts are read at once: bounds the memory a recompute takes


# One summarizer at a time: stitching reads memberships another run may be writing, and
# under READ COMMITTED two runs could each miss the other's half of a link.
SUMMARIZER_LOCK = 0x7469_6465_6C69_6E65  # "tideline"
RUN_SECONDS = 20.0  # then let beat start a fresh run, so one worker is not held forever
STALLED_BATCH = 300  # due flows one transaction of the stalled sweep recomputes
STALLED_SECONDS = 10.0  # a sweep's time: less than beat's 15 s between sweeps


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
            # A record or dead letter that names only its flow changes no membership and no
            # span: its flow may be rebuilt from its span digest (see tracing.flows.digests).
            named_only = [(t, c, m) for t, c, m in touches if t is None and m is None and c]
            rest = [touch for touch in touches if touch[0] is not None or touch[2] is not None]
            affected = stitch(rest)
            by_records = {correlation for _, correlation, _ in named_only} - affected
            updated += flows_recompute(correlation_ids=affected, now=now, by_records=by_records)
    return updated


def _summarizer_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SUMMARIZER_LOCK])
        return bool(cursor.fetchone()[0])


def _touches_take(batch: int) -> list[Touch]:
    # ARRAY(...) runs the locking subquery once; as `IN (subquery)` the planner may re-run it
    # per row when the table's statistics say it is empty, and take far more than `batch`.
    with connection.cursor() as cursor:
        fast_times(cursor)
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


def flows_recompute(
    *, correlation_ids: Collection[str], now: datetime, by_records: Collection[str] = ()
) -> int:
    """Recompute these flows from their facts (idempotent: safe to run any number of times).

    `by_records` are flows whose only news are records or dead letters naming them alone:
    those with a usable span digest are rebuilt from it, the rest from all their facts.
    """
    ordered = sorted(set(correlation_ids) | set(by_records))
    if not ordered:
        return 0
    _flows_lock(ordered)
    with connection.cursor() as cursor:
        fast_times(cursor)
        before = counted_now(cursor, ordered)
    definitions = _Definitions({row.definition_id for row in before.values() if row.definition_id})
    digests = span_digests_load(set(by_records) - set(correlation_ids), definitions.step_spans)
    rebuilt = _Rebuilt(definitions, before, now)
    rebuilt.from_all_facts([cid for cid in ordered if cid not in digests])
    rebuilt.from_digests(digests)
    _instances_save(rebuilt.instances)
    span_digests_save(rebuilt.digests)
    _keys_save(rebuilt.keys)
    changed = {instance.correlation_id for instance in rebuilt.instances}
    flow_hours_shift(
        before=[row for cid, row in before.items() if cid in changed],
        after=[counted(instance) for instance in rebuilt.instances],
    )
    return len(rebuilt.instances)


@dataclass
class _Counts:
    """What the summary counts of a flow's spans: read now, or as its digest keeps them."""

    spans: int
    traces: int
    systems: set[str]


@dataclass
class _Rebuilt:
    """The flows of one recompute, summarized: their instances, keys and new span digests."""

    definitions: _Definitions
    before: dict[str, Counted]
    now: datetime
    instances: list[FlowInstance] = field(default_factory=list)
    keys: set[tuple[str, str, str]] = field(default_factory=set)
    digests: dict[str, bytes] = field(default_factory=dict)

    def from_all_facts(self, correlation_ids: list[str]) -> None:
        step_spans = self.definitions.step_spans
        for first in range(0, len(correlation_ids), FACTS_PER_READ):
            part = correlation_ids[first : first + FACTS_PER_READ]
            for flow in flows_facts(part, step_spans=step_spans).values():
                span_facts = [span_fact(span) for span in flow.spans]
                counts = _Counts(len(flow.spans), len(flow.traces), {f.system for f in span_facts})
                if self._add(flow, span_facts, counts):
                    self.digests[flow.correlation_id] = span_digest(flow, span_facts, step_spans)

    def from_digests(self, digests: dict[str, SpanDigest]) -> None:
        digested = list(digests.items())
        for first in range(0, len(digested), FACTS_PER_READ):
            part = dict(digested[first : first + FACTS_PER_READ])
            for correlation_id, flow in flows_beside_spans(part).items():
                digest = part[correlation_id]
                counts = _Counts(digest.span_count, len(digest.traces), set(digest.systems))
                self._add(flow, digest.span_facts(), counts)

    def _add(self, flow: FlowFacts, span_facts: list[Fact], counts: _Counts) -> bool:
        """Summarize one flow; False when it has no facts (nothing to summarize)."""
        facts = (
            span_facts
            + [record.fact() for record in flow.records]
            + [letter.fact() for letter in flow.dead_letters]
        )
        if not facts:
            return False
        cid = flow.correlation_id
        pinned = self.before[cid].definition_id if cid in self.before else None
        definition = self.definitions.by_id(pinned) or self.definitions.match(facts)
        steps = self.definitions.steps[definition.id] if definition else None
        self.instances.append(_instance(flow, facts, counts, definition, steps, self.now))
        self.keys |= {(value, name, cid) for name, value in flow.business_keys}
        return True


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
            [text_array(correlation_ids)],
        )


class _Definitions:
    """The current definitions (to match new flows) and the pinned versions flows started under.

    Each definition's steps are listed once here: a related manager built per flow (and per
    fact, to match a new flow) cost more than summarizing the flow.
    """

    def __init__(self, pinned_ids: set[int]) -> None:
        query = FlowDefinition.objects.prefetch_related("steps__system").select_related("owner")
        self.current = list(query.filter(is_current=True).order_by("name"))
        known = {definition.id for definition in self.current}
        self.pinned = {d.id: d for d in query.filter(id__in=pinned_ids - known)}
        self.pinned.update({definition.id: definition for definition in self.current})
        self.steps = {d.id: list(d.steps.all()) for d in self.pinned.values()}
        self.firsts = [
            (d, next(s for s in self.steps[d.id] if s.key == d.starts_with)) for d in self.current
        ]

    @property
    def step_spans(self) -> set[str]:
        """The span names any step matches: the spans whose attributes the status may read."""
        steps = [step for found in self.steps.values() for step in found]
        return {step.match["span"] for step in steps if "span" in step.match}

    def by_id(self, definition_id: int | None) -> FlowDefinition | None:
        return self.pinned.get(definition_id) if definition_id else None

    def match(self, facts: list[Fact]) -> FlowDefinition | None:
        """The definition whose first step the flow's earliest fact shows."""
        for fact in sorted(facts, key=lambda fact: fact.at):
            for definition, first in self.firsts:
                if step_done_by(first, fact):
                    return definition
        return None


def _instance(
    flow: FlowFacts, facts: list[Fact], counts: _Counts, definition: FlowDefinition | None,
    steps: list[FlowStep] | None, now: datetime,
) -> FlowInstance:  # fmt: skip
    starts_with = definition.starts_with if definition else ""
    summary: Summary = summarize(facts=facts, steps=steps, starts_with=starts_with, now=now)
    systems = counts.systems | {fact.system for fact in facts}
    return FlowInstance(
        correlation_id=flow.correlation_id, definition=definition, status=summary.status,
        started_at=summary.started_at, last_activity_at=summary.last_activity_at,
        completed_at=summary.completed_at, stopped_at=summary.stopped_at, last_step=summary.last_step,
        sentence=summary.sentence, due_at=summary.due_at,
        steps={key: state.as_json() for key, state in summary.steps.items()},
        steps_done=[key for key, state in summary.steps.items() if state.state == "done"],
        systems=sorted(systems), deadline_missed=summary.deadline_missed,
        span_count=counts.spans, record_count=len(flow.records),
        dead_letter_count=len(flow.dead_letters), trace_count=counts.traces, updated_at=now,
    )  # fmt: skip


_SAVED_COLUMNS = (
    "correlation_id", "definition_id", "status", "started_at", "last_activity_at", "completed_at",
    "stopped_at", "last_step", "sentence", "due_at", "steps", "steps_done", "systems",
    "deadline_missed", "span_count", "record_count", "dead_letter_count", "trace_count", "updated_at",
)  # fmt: skip


def _instances_save(instances: list[FlowInstance]) -> None:
    """COPY the summaries into a staging table, then upsert them in one statement: a few
    thousand rows at once, without building an INSERT of tens of thousands of parameters."""
    if not instances:
        return
    columns = ", ".join(_SAVED_COLUMNS)
    updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in _SAVED_COLUMNS[1:])
    with connection.cursor() as cursor:
        staging = f"SELECT {columns} FROM flows_flowinstance WITH NO DATA"  # noqa: S608 - fixed
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS flows_instance_incoming ON COMMIT DELETE ROWS AS {staging}"
        )
        cursor.execute("DELETE FROM flows_instance_incoming")  # inside an outer transaction too
        with cursor.cursor.copy(f"COPY flows_instance_incoming ({columns}) FROM STDIN") as copy:
            for instance in sorted(instances, key=lambda instance: instance.correlation_id):
                copy.write_row(_saved_row(instance))
        cursor.execute(
            f"""
            INSERT INTO flows_flowinstance ({columns})
            SELECT {columns} FROM flows_instance_incoming ORDER BY correlation_id
            ON CONFLICT (correlation_id) DO UPDATE SET {updates}
            """  # noqa: S608 - fixed column names
        )


def _saved_row(instance: FlowInstance) -> list[Any]:
    row = [getattr(instance, column) for column in _SAVED_COLUMNS]
    row[_SAVED_COLUMNS.index("steps")] = msgspec.json.encode(instance.steps).decode()
    return row


def _keys_save(keys: set[tuple[str, str, str]]) -> None:
    """Business keys the flows carry (value, name, correlation ID); known ones stay as they are."""
    rows = sorted(keys)
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flows_flowkey (value, name, correlation_id)
            SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
            ON CONFLICT DO NOTHING
            """,
            [
                text_array(row[0] for row in rows),
                text_array(row[1] for row in rows),
                text_array(row[2] for row in rows),
            ],
        )


def flows_mark_stalled(*, now: datetime) -> int:
    """Beat: flows whose next step fell due are recomputed, which makes them stalled.

    A few hundred to a transaction, each rebuilt from its span digest where it has one: the
    summarizer writes the same flows and hourly rows and waits for such a transaction to
    commit. One transaction recomputing 5,000 flows from all their facts had held it for
    seconds when a burst of orders fell due together. Flows with news waiting (a mark that
    names them) are left to the summarizer, which reads that news and stalls them as well if
    they are still due; the digest does not hold a span stored since. It stops after
    STALLED_SECONDS, within beat's interval, so two sweeps do not run at once.
    """
    due = list(
        FlowInstance.objects.filter(status=FlowInstance.Status.IN_PROGRESS, due_at__lte=now)
        .order_by("due_at")
        .values_list("correlation_id", flat=True)[:BATCH]  # about what one sweep gets through
    )
    updated, started = 0, time.monotonic()
    for first in range(0, len(due), STALLED_BATCH):
        if time.monotonic() - started >= STALLED_SECONDS:
            break  # the next beat takes the rest
        with transaction.atomic():
            chunk = due[first : first + STALLED_BATCH]
            with_news = set(
                FlowTouch.objects.filter(correlation_id__in=chunk).values_list(
                    "correlation_id", flat=True
                )
            )
            quiet = [correlation for correlation in chunk if correlation not in with_news]
            updated += flows_recompute(correlation_ids=(), by_records=quiet, now=now)
    return updated
