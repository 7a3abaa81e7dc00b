"""Span digests: what a flow's status needs of its spans, kept so a record need not re-read them.

Most of what reaches a known flow is an audit record that names only its correlation ID (a
next step reported, a dead letter's state). Such a record changes no membership and no span,
so the summarizer rebuilds the flow from the digest its last full recompute left and the
flow's records and dead letters, read afresh, instead of reading every span of every trace.

A digest keeps, in recompute order, the span facts a status can turn on (error spans and
spans a definition's step matches by name, with their attributes) and the earliest and the
latest span (the flow's start and its latest word), plus the span count, systems, traces and
message IDs. Anything else that touches the flow (a span, a trace, a link) recomputes it
from all its facts and replaces the digest; so does a digest kept under other definitions.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import msgspec
from django.db import connection

from tracing.flows.arrays import bytea_array, text_array
from tracing.flows.selectors import FlowFacts, flows_records_and_dead_letters
from tracing.flows.status import Fact


class _SpanFact(msgspec.Struct, array_like=True):
    at: datetime
    system: str
    name: str
    event: str
    failed: bool
    error: str
    attributes: dict[str, Any]


class SpanDigest(msgspec.Struct, array_like=True):
    step_spans: list[str]  # the span names whose attributes it kept, sorted
    partial: bool  # some trace showed only the flow's part: a record may move that part
    traces: list[tuple[bytes, str]]  # (trace, how it joined)
    facts: list[_SpanFact]
    span_count: int
    systems: list[str]
    message_ids: list[str]

    def span_facts(self) -> list[Fact]:
        return [_fact(fact) for fact in self.facts]


def _fact(kept: _SpanFact) -> Fact:
    return Fact(
        at=kept.at, kind="span", system=kept.system, name=kept.name, event=kept.event,
        failed=kept.failed, error=kept.error, attributes=kept.attributes,
    )  # fmt: skip


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpanDigest)


def span_digest(flow: FlowFacts, span_facts: list[Fact], step_spans: Collection[str]) -> bytes:
    """The digest of a flow just read whole: `span_facts` are its spans' facts, in order."""
    kept = _status_facts(span_facts, set(step_spans))
    digest = SpanDigest(
        step_spans=sorted(step_spans),
        partial=flow.partial_traces,
        traces=sorted(flow.traces.items()),
        facts=[
            _SpanFact(f.at, f.system, f.name, f.event, f.failed, f.error, f.attributes)
            for f in kept
        ],
        span_count=len(flow.spans),
        systems=sorted({fact.system for fact in span_facts}),
        message_ids=sorted({span.message_id for span in flow.spans if span.message_id}),
    )
    return _encoder.encode(digest)


def _status_facts(facts: list[Fact], step_spans: set[str]) -> list[Fact]:
    """The facts the status can turn on, in their order: a sort by time then gives the same
    first and last fact as all of them did (min keeps the first of equals, max over the
    reversed list the last, as a stable sort does)."""
    if not facts:
        return []
    first, last = min(facts, key=_at), max(reversed(facts), key=_at)
    return [
        fact
        for fact in facts
        if fact is first or fact is last or fact.failed or fact.name in step_spans
    ]


def _at(fact: Fact) -> datetime:
    return fact.at


def span_digests_load(
    correlation_ids: Collection[str], step_spans: Collection[str]
) -> dict[str, SpanDigest]:
    """The stored digests of these flows that were kept under these step span names."""
    if not correlation_ids:
        return {}
    wanted = sorted(step_spans)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT correlation_id, digest FROM flows_spandigest WHERE correlation_id = ANY(%s::text[])",
            [text_array(correlation_ids)],
        )
        digests = {cid: _decoder.decode(bytes(blob)) for cid, blob in cursor.fetchall()}
        usable = {
            cid: digest
            for cid, digest in digests.items()
            if digest.step_spans == wanted and not digest.partial
        }
        # A trace another flow has joined since shows this flow only its part now.
        traces = {trace for digest in usable.values() for trace, _ in digest.traces}
        cursor.execute(
            """
            SELECT trace_id FROM flows_flowtrace WHERE trace_id = ANY(%s::bytea[])
            GROUP BY trace_id HAVING count(*) > 1
            """,
            [bytea_array(traces)],
        )
        shared = {bytes(row[0]) for row in cursor.fetchall()}
    return {
        cid: digest
        for cid, digest in usable.items()
        if not any(trace in shared for trace, _ in digest.traces)
    }


def span_digests_save(digests: dict[str, bytes]) -> None:
    rows = sorted(digests.items())  # one order for every writer
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flows_spandigest (correlation_id, digest)
            SELECT * FROM unnest(%s::text[], %s::bytea[])
            ON CONFLICT (correlation_id) DO UPDATE SET digest = EXCLUDED.digest
            """,
            [[cid for cid, _ in rows], [blob for _, blob in rows]],
        )


def span_digests_forget() -> int:
    """After spans were dropped by retention: every digest may name spans that are gone, so
    each flow is read whole on its next update, as a full recompute would see it."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM flows_spandigest")
        return cursor.rowcount


def flows_beside_spans(digests: dict[str, SpanDigest]) -> dict[str, FlowFacts]:
    """The flows' records and dead letters, read afresh; their spans stand in the digests."""
    return flows_records_and_dead_letters(
        {cid: dict(digest.traces) for cid, digest in digests.items()},
        {cid: set(digest.message_ids) for cid, digest in digests.items()},
    )
