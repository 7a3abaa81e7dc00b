"""Stitching: which traces belong to which flow, derived one hop at a time from facts.

- a trace with a span that carries the correlation ID belongs to its flow;
- an audit record that carries a trace ID joins that trace to the record's flow;
- a span link joins two traces: the trace at the far end joins every flow the near end
  belongs to directly. Beyond that first hop a link is followed only through traces that
  carry no correlation ID of their own and into traces that carry no other one, so a join
  never passes through another flow: the nightly batch trace of 500 orders belongs to each
  of the 500 flows, but none of those flows reaches the other 499 through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from django.db import connection

from tracing.flows.arrays import ANY_BYTEA, ANY_TEXT, bytea_array, text_array
from tracing.flows.models import FlowTrace

Touch = tuple[bytes | None, str | None, str | None]  # (trace_id, correlation_id, message_id)
LINK_HOPS = 3  # how far an async chain of uncorrelated traces is followed
WITHIN = "AND start_time >= %s AND start_time <= %s"  # a spans_window
UNREAD = datetime(1970, 1, 1, tzinfo=UTC)  # a span time the summarizer did not read


@dataclass
class TraceFacts:
    """What stitching needs to know of a trace: its correlation IDs, messages and links."""

    correlation_ids: set[str] = field(default_factory=set)
    message_ids: set[str] = field(default_factory=set)
    linked_traces: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class SpanRow:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    start_time: datetime
    status_code: int
    status_message: str
    service_name: str
    attributes: dict[str, Any]
    links: list[dict[str, Any]]
    correlation_id: str | None
    message_id: str | None
    business_keys: dict[str, str]
    # Only the flow page reads these; the summarizer leaves them out of its reads.
    kind: int = 0
    end_time: datetime = UNREAD
    duration_ns: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def linked_traces(self) -> set[bytes]:
        return {bytes.fromhex(link["trace_id"]) for link in self.links}


def stitch(touches: Iterable[Touch]) -> set[str]:
    """Join the touched traces to their flows; the correlation IDs whose flows changed.

    A touch with a correlation ID changes that flow only; one without (an uncorrelated span,
    a record naming just a trace) may concern every flow of its trace.
    """
    touches = list(touches)
    traces = {trace for trace, _, _ in touches if trace}
    affected = {correlation for _, correlation, _ in touches if correlation}
    facts = traces_facts(traces)
    _direct_joins(touches, facts)
    _links_remember(facts)
    affected |= _link_joins(traces, facts)
    messages = {message for _, correlation, message in touches if message and not correlation}
    affected |= _flows_of_messages(messages)
    uncorrelated = {trace for trace, correlation, _ in touches if trace and not correlation}
    affected |= flows_of_traces(uncorrelated)
    return affected


def trace_ranges_extend(spans: list[tuple[bytes, datetime, datetime]]) -> None:
    """Widen each trace's known time range by the new spans' (trace, first start, last start)."""
    if not spans:
        return
    widest: dict[bytes, tuple[datetime, datetime]] = {}
    for trace, first, last in spans:
        known = widest.get(trace, (first, last))
        widest[trace] = (min(known[0], first), max(known[1], last))
    traces = sorted(widest)  # one order for every writer
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flows_tracerange (trace_id, first_start, last_start)
            SELECT * FROM unnest(%s::bytea[], %s::timestamptz[], %s::timestamptz[])
            ON CONFLICT (trace_id) DO UPDATE
            SET first_start = LEAST(flows_tracerange.first_start, EXCLUDED.first_start),
                last_start = GREATEST(flows_tracerange.last_start, EXCLUDED.last_start)
            """,
            [bytea_array(traces), [widest[t][0] for t in traces], [widest[t][1] for t in traces]],
        )


def spans_window(cursor: Any, traces: Collection[bytes]) -> tuple[datetime, datetime] | None:
    """The time window holding every span of these traces, if known for all of them.

    Reading spans within it lets PostgreSQL skip the daily partitions outside it; a trace
    stored before ranges were kept has none, and then every partition is read.
    """
    if not traces:
        return None
    cursor.execute(
        """
        SELECT count(*), min(first_start), max(last_start) FROM flows_tracerange
        WHERE trace_id = ANY(%s::bytea[])
        """,
        [bytea_array(traces)],
    )
    known, first, last = cursor.fetchone()
    return (first, last) if known == len(set(traces)) else None


def traces_facts(traces: set[bytes]) -> dict[bytes, TraceFacts]:
    facts: dict[bytes, TraceFacts] = {trace: TraceFacts() for trace in traces}
    if not traces:
        return facts
    with connection.cursor() as cursor:
        window = spans_window(cursor, traces)
        cursor.execute(
            f"""
            SELECT trace_id, correlation_id, message_id, links FROM ingest_span
            WHERE trace_id = {ANY_BYTEA} {WITHIN if window else ""}
              AND (correlation_id IS NOT NULL OR message_id IS NOT NULL OR links <> '[]'::jsonb)
            """,  # noqa: S608 - a fixed clause
            [bytea_array(traces), *(window or ())],
        )
        for trace_id, correlation_id, message_id, links in cursor.fetchall():
            trace = facts[bytes(trace_id)]
            if correlation_id:
                trace.correlation_ids.add(correlation_id)
            if message_id:
                trace.message_ids.add(message_id)
            trace.linked_traces |= {bytes.fromhex(link["trace_id"]) for link in json_value(links)}
    return facts


def json_value(value: Any) -> Any:
    # Django's psycopg setup hands raw cursors JSONB as text; msgspec decodes it several
    # times faster than json (the summarizer decodes four documents per span).
    return msgspec.json.decode(value) if isinstance(value, str) else value


def _direct_joins(touches: list[Touch], facts: dict[bytes, TraceFacts]) -> None:
    rows: set[tuple[str, bytes, str]] = set()
    for trace, trace_facts in facts.items():
        rows |= {
            (correlation, trace, FlowTrace.Via.CORRELATED)
            for correlation in trace_facts.correlation_ids
        }
    for touched, correlation, _ in touches:
        if touched and correlation and correlation not in facts[touched].correlation_ids:
            rows.add((correlation, touched, FlowTrace.Via.RECORD))
    memberships_add(rows)


def memberships_add(rows: Iterable[tuple[str, bytes, str]]) -> None:
    rows = sorted(rows)  # one order for every writer: concurrent stitchers cannot deadlock
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flows_flowtrace (correlation_id, trace_id, via)
            SELECT * FROM unnest(%s::text[], %s::bytea[], %s::text[])
            ON CONFLICT DO NOTHING
            """,
            [
                text_array(row[0] for row in rows),
                bytea_array(row[1] for row in rows),
                text_array(row[2] for row in rows),
            ],
        )


def _links_remember(facts: dict[bytes, TraceFacts]) -> None:
    pairs = sorted(
        {
            (trace, linked)
            for trace, trace_facts in facts.items()
            for linked in trace_facts.linked_traces
            if linked != trace
        }
    )
    if not pairs:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flows_spanlink (trace_id, linked_trace_id)
            SELECT * FROM unnest(%s::bytea[], %s::bytea[])
            ON CONFLICT DO NOTHING
            """,
            [bytea_array(a for a, _ in pairs), bytea_array(b for _, b in pairs)],
        )


def _neighbours(traces: set[bytes]) -> set[tuple[bytes, bytes]]:
    """Every link touching these traces, as (this trace, the other), both directions."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT trace_id, linked_trace_id FROM flows_spanlink WHERE trace_id = ANY(%(traces)s::bytea[])
            UNION SELECT linked_trace_id, trace_id FROM flows_spanlink
            WHERE linked_trace_id = ANY(%(traces)s::bytea[])
            """,
            {"traces": bytea_array(traces)},
        )
        return {(bytes(a), bytes(b)) for a, b in cursor.fetchall()}


def _memberships(traces: set[bytes]) -> dict[bytes, dict[str, str]]:
    """trace → {correlation ID: how it joined}."""
    found: dict[bytes, dict[str, str]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT trace_id, correlation_id, via FROM flows_flowtrace WHERE trace_id = ANY(%s::bytea[])",
            [bytea_array(traces)],
        )
        for trace_id, correlation_id, via in cursor.fetchall():
            found[bytes(trace_id)][correlation_id] = via
    return found


def _link_joins(traces: set[bytes], facts: dict[bytes, TraceFacts]) -> set[str]:
    """Follow links from the touched traces in both directions; the flows that gained a trace."""
    gained: set[str] = set()
    frontier = set(traces)
    for _ in range(LINK_HOPS):
        pairs = _neighbours(frontier) if frontier else set()
        if not pairs:
            break
        ends = {trace for pair in pairs for trace in pair}
        facts.update(traces_facts(ends - facts.keys()))
        members = _memberships(ends)
        owners = {end: set(members.get(end, {})) | facts[end].correlation_ids for end in ends}
        rows = sorted(
            (flow, far, FlowTrace.Via.LINK)
            for near, far in pairs
            for flow, via in members.get(near, {}).items()
            if flow not in members.get(far, {}) and _may_join(flow, via, owners[near], owners[far])
        )
        memberships_add(rows)
        frontier = {far for _, far, _ in rows}
        gained |= {flow for flow, _, _ in rows}
    return gained


def _may_join(flow: str, via: str, near: set[str], far: set[str]) -> bool:
    """May a link from `near` (a trace of `flow`) bring `far` into it?

    `near` and `far` are the flows each trace already belongs to (by its own correlated
    spans or the audit records naming it). A trace shared by several flows, such as a
    nightly batch, is never a bridge from one of them into another's trace.
    """
    alone = near <= {flow}
    if via == FlowTrace.Via.LINK:
        return alone and far <= {flow}  # beyond the first hop: only through traces of no one else
    return far <= {flow} or alone


def _flows_of_messages(messages: set[str]) -> set[str]:
    """Flows with a span carrying one of these message IDs (for records with nothing else)."""
    if not messages:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT f.correlation_id FROM ingest_span s
            JOIN flows_flowtrace f ON f.trace_id = s.trace_id
            WHERE s.message_id = {ANY_TEXT}
            """,  # noqa: S608 - a fixed clause
            [text_array(messages)],
        )
        return {row[0] for row in cursor.fetchall()}


def flows_of_traces(traces: set[bytes]) -> set[str]:
    if not traces:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT correlation_id FROM flows_flowtrace WHERE trace_id = ANY(%s::bytea[])",
            [bytea_array(traces)],
        )
        return {row[0] for row in cursor.fetchall()}


def trace_part(
    spans: list[SpanRow],
    correlation_id: str,
    *,
    shared: bool,
    linked_span_ids: set[bytes],
    message_ids: set[str],
) -> list[SpanRow]:
    """The spans of a trace that concern this flow.

    A trace that only this flow has is shown whole. A shared one (a batch of many orders)
    shows the spans anchored to this flow — its correlation ID, the span a link of the flow
    points at, a span carrying one of its messages — with their ancestors, and their
    descendants up to where another flow's span begins.
    """
    others = any(span.correlation_id not in (None, correlation_id) for span in spans)
    if not shared and not others:
        return spans
    anchors = [
        span for span in spans if _anchored(span, correlation_id, linked_span_ids, message_ids)
    ]
    by_id = {span.span_id: span for span in spans}
    children: dict[bytes, list[SpanRow]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id:
            children[span.parent_span_id].append(span)
    keep: set[bytes] = set()
    for anchor in anchors:
        _keep_ancestors(anchor, by_id, keep)
        _keep_descendants(anchor, children, correlation_id, keep)
    return [span for span in spans if span.span_id in keep]


def _anchored(span: SpanRow, correlation_id: str, linked: set[bytes], messages: set[str]) -> bool:
    return (
        span.correlation_id == correlation_id
        or span.span_id in linked
        or (span.message_id is not None and span.message_id in messages)
    )


def _keep_ancestors(span: SpanRow, by_id: dict[bytes, SpanRow], keep: set[bytes]) -> None:
    current: SpanRow | None = span
    while current is not None and current.span_id not in keep:
        keep.add(current.span_id)
        current = by_id.get(current.parent_span_id) if current.parent_span_id else None


def _keep_descendants(
    span: SpanRow, children: dict[bytes, list[SpanRow]], correlation_id: str, keep: set[bytes]
) -> None:
    stack = list(children.get(span.span_id, []))
    while stack:
        child = stack.pop()
        if child.correlation_id not in (None, correlation_id) or child.span_id in keep:
            continue
        keep.add(child.span_id)
        stack.extend(children.get(child.span_id, []))
