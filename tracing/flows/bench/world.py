"""The world stored through the ingest services, then summarized by the real summarizer."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from random import Random
from typing import Any

import msgspec
import psycopg
from django.db import ProgrammingError, connection
from django.db.models import Count

from console.models import IngestToken
from tracing.flows.bench.plan import (
    INVOICE,
    MESSAGE_ID,
    ORDERS_PER_CALL,
    RECORDS_PER_BODY,
    SEAFOOD,
    SENDER,
    Batch,
    Order,
    orders_plan,
)
from tracing.flows.bench.rows import SpanRows, order_dead_letter, order_records, order_spans
from tracing.flows.models import FlowInstance
from tracing.flows.services import flow_definitions_import
from tracing.flows.services.summary import flows_summarize
from tracing.ingest.dead_letters import dead_letters_parse
from tracing.ingest.models import FlowTouch
from tracing.ingest.otlp import SpanBatch
from tracing.ingest.partitions import RECORD_TABLE, partitions_ensure_all, stored_range
from tracing.ingest.records import JSON_ARRAY as JSON
from tracing.ingest.records import records_parse
from tracing.ingest.services import dead_letters_store, records_store, spans_store
from tracing.ledger.models import PendingEntry
from tracing.ledger.services import ledger_sequence

WORLD_TABLES = (
    "ingest_span", "ingest_record", "ingest_recordkey", "ingest_rawbody", "ingest_deadletter",
    "ingest_flowtouch", "flows_flowinstance", "flows_flowtrace", "flows_spanlink", "flows_flowkey",
    "flows_missing", "flows_flowhour", "flows_flowcompletedhour", "flows_spandigest",
)  # fmt: skip


@dataclass
class World:
    orders: int = 0
    spans: int = 0
    records: int = 0
    dead_letters: int = 0
    batches: int = 0
    seconds: float = 0.0


def world_generate(
    *, spans: int, records: int, flows: int, now: datetime, seed: int = 4711
) -> World:
    """Empty the world's tables and store a new week of orders through the ingest services."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # CASCADE: rows that point at the old facts (replays of its dead letters) go with them.
        cursor.execute(f"TRUNCATE {', '.join(WORLD_TABLES)} CASCADE")
    partitions_ensure_all(now=now)
    flow_definitions_import(text=SEAFOOD.read_text(), actor="bench")
    token = IngestToken(sender=SENDER)  # in-process: the stored rows name the sender, not a token
    rng = Random(seed)  # noqa: S311 - a repeatable world, not a secret
    orders, batches = orders_plan(flows=flows, now=now, rng=rng)
    world = World(orders=flows, batches=len(batches))
    span_budgets, record_budgets = _shares(spans - len(batches), flows), _shares(records, flows)
    for first in range(0, flows, ORDERS_PER_CALL):
        part = slice(first, first + ORDERS_PER_CALL)
        _orders_store(
            orders[part], span_budgets[part], record_budgets[part], token, world, rng, now
        )
    for batch in batches:
        world.spans += spans_store(batch=_batch_spans(batch, rng, now)).accepted
    world.seconds = time.perf_counter() - started
    return world


def _shares(total: int, count: int) -> list[int]:
    return [total // count + (1 if index < total % count else 0) for index in range(count)]


def _orders_store(
    orders: list[Order], span_budgets: list[int], record_budgets: list[int], token: IngestToken,
    world: World, rng: Random, now: datetime,
) -> None:  # fmt: skip
    spans, records, letters = SpanRows(rng, now), [], []
    for order, span_budget, record_budget in zip(orders, span_budgets, record_budgets, strict=True):
        where = order_spans(order, spans, budget=span_budget, now=now)
        records += order_records(order, where, budget=record_budget, now=now)
        if order.dead_letter and order.failed(now):
            letters.append(order_dead_letter(order))
    world.spans += spans_store(batch=spans.batch()).accepted
    for first in range(0, len(records), RECORDS_PER_BODY):
        world.records += _records_store(records[first : first + RECORDS_PER_BODY], token, now)
    if letters:
        rows = dead_letters_parse(letters, token=token, received_at=now)
        stored = dead_letters_store(rows=rows, sender=SENDER, source="api", received_at=now)
        world.dead_letters += stored.created


def _records_store(records: list[dict[str, Any]], token: IngestToken, now: datetime) -> int:
    body = msgspec.json.encode(records)
    rows = records_parse(body, JSON, token=token, stored_range=stored_range(RECORD_TABLE))
    stored = records_store(rows=rows, body=body, content_type=JSON, sender=SENDER, received_at=now)
    return stored.accepted


def _batch_spans(batch: Batch, rng: Random, now: datetime) -> SpanBatch:
    """One night's invoice export: a root, and a span for each order that carries its keys."""
    spans, trace, root = SpanRows(rng, now), batch.trace_id, batch.span_id
    size = {"batch.size": len(batch.members)}
    spans.add(trace, None, "invoice.export", "FIN", batch.at, span_id=root, attributes=size, ms=600)
    for order in batch.members:
        attributes = {f"business.{key}": value for key, value in order.keys(INVOICE).items()}
        attributes |= {
            "correlation.id": order.correlation_id,
            MESSAGE_ID: order.message_id(INVOICE),
        }
        at = order.times[INVOICE]
        spans.add(
            trace, root, "invoice.basis", "FIN", at, span_id=order.batch_span, attributes=attributes
        )
    return spans.batch()


@dataclass
class Summarized:
    flows: int
    seconds: float
    statuses: dict[str, int]


def world_summarize(*, now: datetime) -> Summarized:
    """The real summarizer drains every mark the world left, timed.

    The facts get their statistics first, as autovacuum would have kept them over a week of
    ingest (a bulk load leaves none, and the summarizer's reads would scan every partition);
    the flow tables get theirs from `world_vacuum`, before anything is measured.
    """
    _analyze(table for table in WORLD_TABLES if table.startswith("ingest_"))
    started = time.perf_counter()
    while FlowTouch.objects.exists():  # one run of the summarizer stops after RUN_SECONDS
        flows_summarize(now=now)
    seconds = time.perf_counter() - started
    counted = FlowInstance.objects.values_list("status").annotate(count=Count("id")).order_by()
    statuses = {status: count for status, count in counted}
    return Summarized(flows=sum(statuses.values()), seconds=seconds, statuses=statuses)


@dataclass
class Vacuumed:
    seconds: float
    checkpoint: bool  # False: the database role may not take one (superuser or pg_checkpoint)


def world_vacuum() -> Vacuumed:
    """VACUUM ANALYZE the world's tables and take a checkpoint before measuring, timed.

    The world is a week of data loaded and summarized in minutes: no row is vacuumed yet
    (no visibility map, so no index-only scans; hint bits unset, so the first reads write),
    which a week of autovacuum would have seen to. This machine's PostgreSQL runs with
    autovacuum off, so the bench does it; in a --reuse-world run it also settles what the
    last lag phase wrote. Then a checkpoint writes out and syncs what loading, sequencing and
    vacuuming left dirty, so that it is not written while the reads are timed.
    """
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {', '.join(WORLD_TABLES)}")
        checkpoint = _checkpoint(cursor)
    return Vacuumed(seconds=time.perf_counter() - started, checkpoint=checkpoint)


def _checkpoint(cursor: Any) -> bool:
    try:
        cursor.execute("CHECKPOINT")
    except ProgrammingError as refused:
        if isinstance(refused.__cause__, psycopg.errors.InsufficientPrivilege):
            return False
        raise
    return True


def _analyze(tables: Iterable[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(tables)}")


@dataclass
class CaughtUp:
    entries: int
    seconds: float


def ledger_catch_up(*, now: datetime) -> CaughtUp:
    """Sequence every ledger entry the world's records queued, timed.

    Over a week of ingest, beat keeps the ledger current within a second; a world loaded in
    minutes leaves a backlog of some 500,000 records instead, which the sequencer would
    otherwise work off during the lag phase, on the cores the summarizer needs.
    """
    started, entries = time.perf_counter(), 0
    while PendingEntry.objects.exists():
        entries += ledger_sequence(now=now).entries
    return CaughtUp(entries=entries, seconds=time.perf_counter() - started)
