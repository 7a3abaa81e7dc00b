"""`manage.py bench flows`: a week of the seafood company at scale, and what people feel of it.

1. The world: orders of order-to-invoice over the last seven days, stored through the ingest
   services (COPY, with the flow-touch marks ingest writes) and summarized by the real
   `flows_summarize`, then ANALYZEd. Most orders complete; some stall at each step, some fail
   (half of those with a dead letter), a few go on without their certificate (partial), the
   newest are in progress. An order spans two or three traces: ERP's, the warehouse's (joined by a span
   link: an async hop) and shipping's; each night's invoice export is one trace of many orders.
2. Reads against a live server, as a support user: flow API, flow page, search, dashboard.
3. Summarizer lag: paced ingest through the HTTP endpoints while a Celery worker and beat run;
   lag runs from an ingest request's 200 until its flow's summary shows the new fact.

It empties the span, record, dead-letter and flow tables first (and what refers to them), so
it runs only on a database whose name says "bench" (or with --yes-wipe).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import queue
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import import_module
from pathlib import Path
from random import Random
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import psutil
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from console.access import Role
from console.models import IngestToken
from console.services import api_token_create, ingest_token_create, user_create
from tracing.flows.models import FlowInstance
from tracing.flows.services import flow_definitions_import
from tracing.flows.services.summary import flows_summarize
from tracing.ingest.bench import live_server
from tracing.ingest.dead_letters import dead_letters_parse
from tracing.ingest.models import FlowTouch
from tracing.ingest.otlp import EPOCH, SpanBatch
from tracing.ingest.partitions import RECORD_TABLE, partitions_ensure_all, stored_range
from tracing.ingest.records import JSON_ARRAY as JSON
from tracing.ingest.records import records_parse
from tracing.ingest.services import dead_letters_store, records_store, spans_store

SENDER = "bench-runtime"
SEAFOOD = Path(__file__).resolve().parent / "fixtures" / "seafood.yaml"
FIRST_ORDER = 4_000_000
WEEK = timedelta(days=7)
# order-to-invoice after its first step (the ERP span order.create), as records report them.
STEPS = (
    ("WMS", "stock.reserve"),
    ("MES", "production.notify"),
    ("QMS", "certificate.approve"),
    ("TMS", "shipment.book"),
    ("FIN", "invoice.basis"),
)
STEP_KEYS = (
    "stock_reserved",
    "production_notified",
    "certificate_approved",
    "shipment_booked",
    "invoice_basis_sent",
)
CERTIFICATE, SHIPMENT, INVOICE = 2, 3, 4
# Minutes before each step, inside its deadline (the invoice's is a day).
GAP_MINUTES = ((1, 10), (5, 25), (5, 25), (20, 100), (60, 1200))
ERRORS = {
    "WMS": (409, "stock already allocated"),
    "MES": (500, "production plan locked"),
    "QMS": (503, "QMS unavailable"),
    "TMS": (504, "carrier API timed out"),
    "FIN": (422, "unknown customer account"),
}
SYSTEMS = ("ERP", *ERRORS)
RESOURCES = {
    system: {"service.name": system, "deployment.environment": "bench"} for system in SYSTEMS
}
RESOURCE_DIGESTS = {
    system: hashlib.sha256(
        json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    for system, resource in RESOURCES.items()
}
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5
STEP_MS = 250.0  # a step's span; the small ones under it take 2 ms each
MESSAGE_ID = "messaging.message.id"
ORDERS_PER_CALL = 1000
RECORDS_PER_BODY = 1000
WORLD_TABLES = (
    "ingest_span", "ingest_record", "ingest_recordkey", "ingest_rawbody", "ingest_deadletter",
    "ingest_flowtouch", "flows_flowinstance", "flows_flowtrace", "flows_spanlink", "flows_flowkey",
    "flows_missing",
)  # fmt: skip
FLOORS_MS = {"flow API": 50.0, "flow page": 150.0, "search": 100.0, "dashboard": 300.0}
LAG_FLOOR_SECONDS = 5.0
LIVE_SPANS_PER_ORDER, LIVE_ORDERS_PER_REQUEST, LIVE_RECORDS_PER_REQUEST = 20, 13, 100
DRAIN_SECONDS = 60.0


def database_check(*, yes_wipe: bool) -> None:
    name = str(connection.settings_dict["NAME"])
    if "bench" not in name and not yes_wipe:
        raise CommandError(
            f"bench flows empties the span, record and flow tables of {name!r}. Point DATABASE_URL "
            "at a database whose name contains 'bench', or pass --yes-wipe."
        )


# The world: a plan per order, then the rows ingest would have stored for it.


@dataclass
class Batch:
    """One night's invoice export: a FIN trace that carries many orders."""

    at: datetime
    trace_id: bytes
    span_id: bytes
    members: list[Order] = field(default_factory=list)


@dataclass(slots=True)
class Order:
    number: int
    created_at: datetime
    times: list[datetime]  # when each of STEPS happens; later than now means not yet
    traces: tuple[bytes, bytes, bytes]  # ERP's, the warehouse's (an async hop), shipping's
    batch_span: bytes  # its span in the night's export, if it is in one
    stops_before: int = len(STEPS)
    fails_at: int | None = None
    dead_letter: bool = False
    skipped: int | None = None  # partial: it goes on without this step
    batch: Batch | None = None

    @property
    def correlation_id(self) -> str:
        return str(self.number)

    def done(self, now: datetime) -> list[int]:
        steps = range(self.stops_before)
        return [step for step in steps if step != self.skipped and self.times[step] <= now]

    def failed(self, now: datetime) -> bool:
        return self.fails_at is not None and self.times[self.fails_at] <= now

    def reached(self, now: datetime) -> list[int]:
        return self.done(now) + ([self.stops_before] if self.failed(now) else [])

    def message_id(self, step: int | None) -> str:
        return f"msg-{self.number}-{'order' if step is None else step}"

    def keys(self, step: int | None) -> dict[str, str]:
        """The business keys a step's records carry: the order, and its shipment or invoice."""
        keys = {"order": self.correlation_id}
        keys |= {"shipment": f"SHP-{self.number}"} if step == SHIPMENT else {}
        keys |= {"invoice": f"INV-{self.number}"} if step == INVOICE else {}
        return keys


def orders_plan(*, flows: int, now: datetime, rng: Random) -> tuple[list[Order], list[Batch]]:
    """Orders spread evenly over the last week, each with its fate and times; the night batches."""
    spacing = (WEEK - timedelta(minutes=1)) / flows
    batch_size = min(500, max(3, flows // 200))
    nights: dict[datetime, Batch] = {}
    orders = []
    for index in range(flows):
        created = now - WEEK + spacing * (index + rng.random())
        traces = (rng.randbytes(16), rng.randbytes(16), rng.randbytes(16))
        order = Order(FIRST_ORDER + index, created, _times(created, rng), traces, rng.randbytes(8))
        _fate(order, rng)
        _invoice_route(order, nights, batch_size=batch_size, now=now, rng=rng)
        orders.append(order)
    return orders, list(nights.values())


def _times(created: datetime, rng: Random) -> list[datetime]:
    times, at = [], created
    for low, high in GAP_MINUTES:
        at += timedelta(minutes=rng.uniform(low, high))
        times.append(at)
    return times


def _fate(order: Order, rng: Random) -> None:
    chance, step = rng.random(), rng.randrange(len(STEPS))
    if chance < 0.08:
        order.stops_before = step
    elif chance < 0.15:
        order.stops_before = order.fails_at = step
        order.dead_letter = rng.random() < 0.5
    elif chance < 0.18:
        order.skipped = CERTIFICATE


def _invoice_route(
    order: Order, nights: dict[datetime, Batch], *, batch_size: int, now: datetime, rng: Random
) -> None:
    """The invoice basis goes in the next night's export while it has room, else on its own."""
    if order.stops_before <= INVOICE:
        return
    shipped = order.times[SHIPMENT]
    night = shipped.replace(hour=2, minute=0, second=0, microsecond=0)
    night += timedelta(days=1) if night <= shipped else timedelta()
    if night + timedelta(seconds=1) > now:
        return
    batch = nights.setdefault(night, Batch(night, rng.randbytes(16), rng.randbytes(8)))
    if len(batch.members) < batch_size:
        order.times[INVOICE] = night + timedelta(milliseconds=len(batch.members) + 1)
        order.batch = batch
        batch.members.append(order)


class SpanRows:
    """Span rows as ingest stores them (tracing.ingest.services.SPAN_COLUMNS)."""

    def __init__(self, rng: Random, received_at: datetime) -> None:
        self.rng, self.received_at = rng, received_at
        self.rows: list[list[Any]] = []

    def add(
        self, trace: bytes, parent: bytes | None, name: str, system: str, at: datetime, *,
        kind: int = 1, attributes: dict[str, Any] | None = None, link: tuple[bytes, bytes] | None = None,
        span_id: bytes | None = None, error: int = 0, ms: float = 2.0,
    ) -> bytes:  # fmt: skip
        span_id = span_id or self.rng.randbytes(8)
        attributes = attributes or {}
        links = (
            [{"trace_id": link[0].hex(), "span_id": link[1].hex(), "attributes": {}}]
            if link
            else []
        )
        business = {
            k.removeprefix("business."): str(v)
            for k, v in attributes.items()
            if k.startswith("business.")
        }
        self.rows.append([
            trace, span_id, parent, name, kind, at, at + timedelta(milliseconds=ms), int(ms * 1e6),
            2 if error else 0, ERRORS[system][1] if error else "", system, RESOURCE_DIGESTS[system],
            "bench", attributes, [], links, attributes.get("correlation.id"),
            attributes.get("messaging.message.id"), business, SENDER, self.received_at,
        ])  # fmt: skip
        return span_id

    def batch(self) -> SpanBatch:
        resources = {RESOURCE_DIGESTS[system]: (system, RESOURCES[system]) for system in SYSTEMS}
        return SpanBatch(rows=self.rows, resources=resources)


def order_spans(
    order: Order, spans: SpanRows, *, budget: int, now: datetime
) -> dict[int, tuple[bytes, bytes]]:
    """The order's spans over its two or three traces; for each step that happened, its span."""
    erp, first = order.traces[0], len(spans.rows)
    cid, at = order.correlation_id, order.created_at
    keys = {"correlation.id": cid, "business.order": cid}
    start = spans.add(
        erp, None, "order.create", "ERP", at, kind=SERVER, attributes=keys, ms=STEP_MS
    )
    message = {MESSAGE_ID: order.message_id(0)}
    publish = spans.add(erp, start, "orders.publish", "ERP", at, kind=PRODUCER, attributes=message)
    parents = {erp: (start, "ERP", at)}
    where = {
        step: _step_span(order, step, spans, parents, (erp, publish)) for step in order.reached(now)
    }
    in_batch = order.batch is not None and INVOICE in where
    _padding(spans, parents, budget - (len(spans.rows) - first) - in_batch)
    return where


def _step_span(
    order: Order, step: int, spans: SpanRows, parents: dict[bytes, tuple[bytes, str, datetime]],
    published: tuple[bytes, bytes],
) -> tuple[bytes, bytes]:  # fmt: skip
    """Stock, production and certificate happen in the warehouse's trace, which a span link
    joins to ERP's; shipment and invoice in shipping's, or the invoice in the night's export."""
    if step == INVOICE and order.batch is not None:
        return order.batch.trace_id, order.batch_span
    trace = order.traces[1] if step < SHIPMENT else order.traces[2]
    (system, name), at = STEPS[step], order.times[step]
    error = ERRORS[system][0] if step == order.fails_at else 0
    attributes: dict[str, Any] = {MESSAGE_ID: order.message_id(step)}
    if step >= SHIPMENT:  # shipping's trace carries the order: it joins the flow directly
        attributes |= {f"business.{key}": value for key, value in order.keys(step).items()}
        attributes["correlation.id"] = order.correlation_id
    if error:
        attributes["http.response.status_code"] = error
    parent = parents.get(trace, (None,))[0]
    span = spans.add(trace, parent, name, system, at, kind=CONSUMER if step == 0 else SERVER, ms=STEP_MS,
                     attributes=attributes, link=published if step == 0 else None, error=error)  # fmt: skip
    parents.setdefault(trace, (span, system, at))
    return trace, span


def _padding(
    spans: SpanRows, parents: dict[bytes, tuple[bytes, str, datetime]], count: int
) -> None:
    """The small spans under each trace's root: queries, HTTP calls, serialisation."""
    names = ("db.query", "http.client", "cache.get", "serialize")
    roots = list(parents.items())
    for number in range(count):
        trace, (parent, system, at) = roots[number % len(roots)]
        at += timedelta(milliseconds=2 + number)
        name = names[number % len(names)]
        spans.add(trace, parent, name, system, at, kind=CLIENT, attributes={"component": name})


def order_records(
    order: Order, where: dict[int, tuple[bytes, bytes]], *, budget: int, now: datetime
) -> list[dict[str, Any]]:
    """Delivered records for the steps done, the failure, then 'received' ones up to the budget."""
    records = [_record(order, step, "delivered", where) for step in order.done(now)]
    if order.failed(now):
        event = "dead_lettered" if order.dead_letter else "failed"
        records.append(_record(order, order.stops_before, event, where))
    reached: list[int | None] = [*order.reached(now)] or [None]
    for number in range(budget - len(records)):
        step = reached[number % len(reached)]
        records.append(_record(order, step, "received", where, early_ms=number + 1))
    return records


def _record(
    order: Order,
    step: int | None,
    event: str,
    where: dict[int, tuple[bytes, bytes]],
    early_ms: int = 0,
) -> dict[str, Any]:
    system, name = STEPS[step] if step is not None else ("ERP", "order.create")
    at = order.times[step] if step is not None else order.created_at
    keys = order.keys(step)
    payload = {**keys, "amount": order.number % 9000 + 100.5, "currency": "NOK"}
    record = {
        "record_id": f"{order.number}-{step}-{event}-{early_ms}", "occurred_at": at - timedelta(milliseconds=early_ms),
        "system": system, "step": name, "event": event, "message_id": order.message_id(step),
        "correlation_id": order.correlation_id, "business_keys": keys, "payload": json.dumps(payload),
        "content_type": "application/json",
    }  # fmt: skip
    if step is not None and step in where:
        trace, span = where[step]
        record["trace_id"], record["span_id"] = trace.hex(), span.hex()
    if event in ("failed", "dead_lettered"):
        record["error"] = f"HTTP {ERRORS[system][0]} from {system}: {ERRORS[system][1]}"
    return record


def order_dead_letter(order: Order) -> dict[str, Any]:
    step = order.stops_before
    system, name = STEPS[step]
    at = order.times[step]
    return {
        "message_id": order.message_id(step), "correlation_id": order.correlation_id, "system": system,
        "transport": "http", "url": f"http://{system.lower()}.internal/{name}", "content_type": "application/json",
        "payload": json.dumps({"order": order.correlation_id}), "attempts": 5,
        "error": f"HTTP {ERRORS[system][0]} from {system}: {ERRORS[system][1]}",
        "first_failed_at": (at - timedelta(minutes=4)).isoformat(),
        "last_failed_at": (at + timedelta(seconds=2)).isoformat(),
    }  # fmt: skip


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
    the flow tables get theirs after.
    """
    _analyze(table for table in WORLD_TABLES if table.startswith("ingest_"))
    started = time.perf_counter()
    flows_summarize(now=now)
    seconds = time.perf_counter() - started
    _analyze(WORLD_TABLES)
    counted = FlowInstance.objects.values_list("status").annotate(count=Count("id")).order_by()
    statuses = {status: count for status, count in counted}
    return Summarized(flows=sum(statuses.values()), seconds=seconds, statuses=statuses)


def _analyze(tables: Iterable[str]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(tables)}")


# Reads: what a support person waits for.


@dataclass
class Figure:
    name: str
    floor: float  # ms, or s for the lag
    values: list[float] = field(default_factory=list)  # seconds, of 200 answers only
    refused: Counter[int] = field(default_factory=Counter)  # status (0: no answer) → count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def percentile(self, share: float) -> float | None:
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else None

    def add(self, status: int, seconds: float) -> None:
        with self.lock:
            if status == 200:
                self.values.append(seconds)
            else:
                self.refused[status] += 1


def support_session() -> tuple[str, str]:
    """A support user's personal API token and the key of a signed-in session."""
    name = f"bench-support-{secrets.token_hex(3)}"
    user = user_create(
        username=name, role=Role.SUPPORT, password=secrets.token_urlsafe(16), actor="bench"
    )
    token = api_token_create(user=user, name="bench flows").secret
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return token, str(session.session_key)


def _sample(query: str, size: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(query + " ORDER BY random() LIMIT %s", [size])
        return [
            bytes(value).hex() if isinstance(value, bytes | memoryview) else value
            for (value,) in cursor.fetchall()
        ]


READS = (  # figure, its floor, who asks, the path for one sample
    ("flow API   GET /api/v1/flows/<id>", "flow API", "api", "/api/v1/flows/{flow}"),
    ("flow page  GET /flows/<id>", "flow page", "page", "/flows/{flow}"),
    ("search by correlation ID", "search", "api", "/api/v1/search?q={flow}"),
    ("search by shipment number", "search", "api", "/api/v1/search?q={shipment}"),
    ("search by trace ID", "search", "api", "/api/v1/search?q={trace}"),
    ("dashboard  GET /", "dashboard", "page", "/"),
)
Read = tuple[Figure, dict[str, str], list[str]]


def reads_plan(*, size: int, api_token: str, session: str) -> list[Read]:
    """Each figure with its headers and paths, over random flows, shipments and traces."""
    samples = zip(
        _sample("SELECT correlation_id FROM flows_flowinstance", size),
        _sample("SELECT value FROM flows_flowkey WHERE name = 'shipment'", size),
        _sample("SELECT trace_id FROM flows_flowtrace", size),
        strict=False,
    )
    chosen = [{"flow": quote(f), "shipment": quote(s), "trace": t} for f, s, t in samples]
    headers = {
        "api": {"Authorization": f"Token {api_token}"},
        "page": {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
    }
    return [
        (Figure(name, FLOORS_MS[floor]), headers[who], [path.format(**one) for one in chosen])
        for name, floor, who, path in READS
    ]


def reads_measure(url: str, plan: list[Read], *, requests: int, clients: int) -> list[Figure]:
    for figure, headers, paths in plan:
        if not paths:
            continue
        wanted = [paths[number % len(paths)] for number in range(requests)]
        warm_up = Figure(figure.name, figure.floor)
        timed_gets(url, wanted[: clients * 2], headers=headers, clients=clients, figure=warm_up)
        timed_gets(url, wanted, headers=headers, clients=clients, figure=figure)
    return [figure for figure, _, _ in plan]


def timed_gets(
    url: str, paths: list[str], *, headers: dict[str, str], clients: int, figure: Figure
) -> None:
    """GET every path once from `clients` concurrent connections, timing each answer."""
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    for path in paths:
        pending.put(path)

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while True:
                try:
                    path = pending.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    status = http.get(path).status_code
                except httpx.HTTPError:
                    status = 0
                figure.add(status, time.perf_counter() - started)

    _together([client] * clients)


def _together(work: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# Summarizer lag: paced ingest of new orders and of next steps of existing ones.


@dataclass
class LiveOrder:
    correlation_id: str
    at: datetime
    trace_id: bytes
    span_id: bytes


@dataclass
class Probe:
    correlation_id: str
    fact_at: datetime
    acked: float  # time.monotonic() when the 200 arrived


@dataclass
class IngestRun:
    """What the paced clients sent and what came back; the flows they touch."""

    started: float
    seconds: float
    existing: deque[tuple[str, str]]  # (correlation ID, the step it waits for)
    spans: int = 0
    records: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    fresh: deque[LiveOrder] = field(default_factory=deque)
    probes: queue.SimpleQueue[Probe] = field(default_factory=queue.SimpleQueue)
    # Order numbers of this run: far from the world's, and from an earlier run's (< 100,000 a run).
    numbers: Iterator[int] = field(
        default_factory=lambda: itertools.count(int(time.time()) * 100_000)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(
        self,
        status: int,
        probe: Probe,
        *,
        spans: int = 0,
        records: int = 0,
        orders: list[LiveOrder] | None = None,
    ) -> None:
        with self.lock:
            if status != 200:
                self.refused[status] += 1
                return
            self.spans, self.records = self.spans + spans, self.records + records
            self.fresh.extend(orders or [])
        self.probes.put(probe)

    def records_next(self, count: int) -> list[dict[str, Any]]:
        """Next steps of waiting flows first (half), then the warehouse steps of new orders."""
        at = datetime.now(UTC)
        with self.lock:
            fresh = [self.fresh.popleft() for _ in range(min(count // 4, len(self.fresh)))]
            waiting = [
                self.existing.popleft()
                for _ in range(min(count - 2 * len(fresh), len(self.existing)))
            ]
            self.existing.extend(waiting)  # round again if the run outlasts the waiting flows
        records = [_live_record(cid, step, at) for cid, step in waiting]
        for order in fresh:
            records += [_live_record(order.correlation_id, key, at, order) for key in STEP_KEYS[:2]]
        return records


def _live_record(
    correlation_id: str, key: str, at: datetime, order: LiveOrder | None = None
) -> dict[str, Any]:
    system, step = STEPS[STEP_KEYS.index(key)] if key in STEP_KEYS else STEPS[INVOICE]
    record: dict[str, Any] = {
        "record_id": f"live-{secrets.token_hex(8)}", "occurred_at": at.isoformat(), "system": system, "step": step,
        "event": "delivered", "correlation_id": correlation_id, "message_id": f"msg-{correlation_id}-{key}",
        "business_keys": {"order": correlation_id}, "payload": json.dumps({"order": correlation_id}),
        "content_type": "application/json",
    }  # fmt: skip
    if order is not None:
        record["trace_id"], record["span_id"] = order.trace_id.hex(), order.span_id.hex()
    return record


def live_export(run: IngestRun) -> tuple[ExportTraceServiceRequest, list[LiveOrder]]:
    """New orders: ERP's trace and the warehouse's, joined by a span link, 20 spans each."""
    export = ExportTraceServiceRequest()
    erp, wms = _scope(export, "ERP"), _scope(export, "WMS")
    orders = []
    for _ in range(LIVE_ORDERS_PER_REQUEST):
        cid, at = str(next(run.numbers)), datetime.now(UTC)
        ordered, reserved = secrets.token_bytes(16), secrets.token_bytes(16)
        keys = {"correlation.id": cid, "business.order": cid}
        start = _pb_span(erp, ordered, None, "order.create", at, keys)
        publish = _pb_span(erp, ordered, start, "orders.publish", at, {MESSAGE_ID: f"msg-{cid}-0"})
        reserve = _pb_span(wms, reserved, None, "stock.reserve", at, {}, link=(ordered, publish))
        for number in range(LIVE_SPANS_PER_ORDER - 3):
            scope, trace, parent = (erp, ordered, start) if number % 2 else (wms, reserved, reserve)
            _pb_span(scope, trace, parent, "db.query", at, {"component": "db.query"})
        orders.append(LiveOrder(cid, at, reserved, reserve))
    return export, orders


def _scope(export: ExportTraceServiceRequest, system: str) -> ScopeSpans:
    resource_spans = export.resource_spans.add()
    for key, value in RESOURCES[system].items():
        resource_spans.resource.attributes.add(key=key).value.string_value = value
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "bench"
    return scope


def _pb_span(
    scope: ScopeSpans,
    trace: bytes,
    parent: bytes | None,
    name: str,
    at: datetime,
    attributes: dict[str, str],
    link: tuple[bytes, bytes] | None = None,
) -> bytes:
    span = scope.spans.add()
    span.trace_id, span.span_id, span.name = trace, secrets.token_bytes(8), name
    span.kind = Span.SPAN_KIND_SERVER
    span.parent_span_id = parent or b""
    span.start_time_unix_nano = (at - EPOCH) // timedelta(microseconds=1) * 1000
    span.end_time_unix_nano = span.start_time_unix_nano + 2_000_000
    for key, value in attributes.items():
        span.attributes.add(key=key).value.string_value = value
    if link:
        added = span.links.add()
        added.trace_id, added.span_id = link
    return bytes(span.span_id)


Sender = Callable[[httpx.Client, IngestRun], None]


def _paced(
    url: str, token: str, run: IngestRun, send: Sender, *, interval: float, offset: float
) -> Callable[[], None]:
    """A client that sends every `interval` seconds; when late, it sends at once to catch up."""

    def client() -> None:
        due = run.started + offset
        with httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            while due < run.started + run.seconds:
                time.sleep(max(0.0, due - time.monotonic()))
                send(http, run)
                due += interval

    return client


def spans_send(http: httpx.Client, run: IngestRun) -> None:
    export, orders = live_export(run)
    sent = sum(len(scope.spans) for spans in export.resource_spans for scope in spans.scope_spans)
    status, body = _post(http, "/v1/traces", export.SerializeToString(), "application/x-protobuf")
    probe = Probe(orders[0].correlation_id, orders[0].at, time.monotonic())
    stored = (
        sent - ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
        if status == 200
        else 0
    )
    run.answered(status, probe, spans=stored, orders=orders)


def records_send(http: httpx.Client, run: IngestRun) -> None:
    records = run.records_next(LIVE_RECORDS_PER_REQUEST)
    if not records:
        return
    status, body = _post(http, "/ingest/v1/records", msgspec.json.encode(records), JSON)
    first = records[0]
    probe = Probe(
        first["correlation_id"], datetime.fromisoformat(first["occurred_at"]), time.monotonic()
    )
    run.answered(status, probe, records=int(json.loads(body)["accepted"]) if status == 200 else 0)


def _post(http: httpx.Client, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    try:
        response = http.post(path, content=body, headers={"Content-Type": content_type})
    except httpx.HTTPError:
        return 0, b""
    return response.status_code, response.content


@dataclass
class Lag:
    ingest: IngestRun
    figure: Figure = field(default_factory=lambda: Figure("summarizer lag", LAG_FLOOR_SECONDS))
    unseen: int = 0  # probes whose flow was still not current DRAIN_SECONDS after ingest stopped
    backlog: int = -1  # marks waiting for the summarizer when ingest stopped


def lag_measure(url: str, *, token: str, seconds: float, span_rate: int, record_rate: int) -> Lag:
    """Paced ingest for `seconds` while the summarizer runs; lag until each probe shows."""
    waiting = (
        FlowInstance.objects.filter(stopped_at__in=STEP_KEYS)
        .exclude(status="completed")
        .order_by("?")
    )
    existing = deque(
        waiting.values_list("correlation_id", "stopped_at")[: int(seconds * record_rate / 2)]
    )
    run = IngestRun(started=time.monotonic() + 1, seconds=seconds, existing=existing)
    span_interval = 4 * LIVE_SPANS_PER_ORDER * LIVE_ORDERS_PER_REQUEST / span_rate
    record_interval = 2 * LIVE_RECORDS_PER_REQUEST / record_rate
    clients = [
        _paced(url, token, run, spans_send, interval=span_interval, offset=n * span_interval / 4)
        for n in range(4)
    ]
    clients += [
        _paced(
            url, token, run, records_send, interval=record_interval, offset=n * record_interval / 2
        )
        for n in range(2)
    ]
    sending = threading.Thread(target=_together, args=(clients,))
    sending.start()
    lag = Lag(ingest=run)
    _probes_watch(run, lag, sending)
    return lag


def _probes_watch(run: IngestRun, lag: Lag, sending: threading.Thread) -> None:
    """Poll the summary until each probe's fact shows, up to DRAIN_SECONDS after ingest stops."""
    pending: list[Probe] = []
    deadline = run.started + run.seconds + DRAIN_SECONDS
    while time.monotonic() < deadline and (sending.is_alive() or pending or not run.probes.empty()):
        if lag.backlog < 0 and not sending.is_alive():
            lag.backlog = FlowTouch.objects.count()
        while not run.probes.empty():
            pending.append(run.probes.get())
        shown = _last_activity([probe.correlation_id for probe in pending])
        seen = time.monotonic()
        for probe in [p for p in pending if shown.get(p.correlation_id, EPOCH) >= p.fact_at]:
            lag.figure.add(200, seen - probe.acked)
            pending.remove(probe)
        time.sleep(0.1)
    sending.join()
    lag.unseen = len(pending)


def _last_activity(correlation_ids: list[str]) -> dict[str, datetime]:
    if not correlation_ids:
        return {}
    return dict(
        FlowInstance.objects.filter(correlation_id__in=correlation_ids).values_list(
            "correlation_id", "last_activity_at"
        )
    )


@contextmanager
def celery_running() -> Iterator[Path]:
    """A Celery worker and beat as `serve` runs them; yields their log file."""
    home = Path(tempfile.mkdtemp(prefix="tideline-bench-celery-"))
    celery = [sys.executable, "-m", "celery", "-A", "console"]
    commands = [
        [*celery, "worker", "--concurrency", "2", "--loglevel", "WARNING"],
        [*celery, "beat", "--schedule", str(home / "celerybeat-schedule"), "--loglevel", "WARNING"],
    ]
    log = home / "celery.log"
    with log.open("wb") as output:
        processes = [
            subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603 - our own
            for command in commands
        ]
        try:
            _worker_wait(processes, log)
            yield log
        finally:
            _processes_stop(processes)


def _worker_wait(processes: list[subprocess.Popen[bytes]], log: Path) -> None:
    from console.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError(f"Celery exited at start; see {log}")
        if app.control.ping(timeout=1.0):
            return
    raise RuntimeError(f"the Celery worker did not answer within 60 s; see {log}")


def _processes_stop(processes: list[subprocess.Popen[bytes]]) -> None:
    family = []
    for process in processes:
        try:
            family += [
                psutil.Process(process.pid),
                *psutil.Process(process.pid).children(recursive=True),
            ]
        except psutil.NoSuchProcess:
            continue
        process.terminate()
    _, alive = psutil.wait_procs(family, timeout=30)
    for survivor in alive:
        survivor.kill()
    psutil.wait_procs(alive, timeout=5)


# The report.


def machine() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} CPUs, {memory:.0f} GB RAM, PostgreSQL {version}"


def figure_line(figure: Figure, unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1
    p50, p95 = figure.percentile(0.5), figure.percentile(0.95)
    shown = [
        f"{value * scale:>8,.{0 if unit == 'ms' else 2}f} {unit}"
        if value is not None
        else f"{'n/a':>11}"
        for value in (p50, p95)
    ]
    verdict = "n/a" if p95 is None else "meets" if p95 * scale <= figure.floor else "MISSES"
    refused = ", ".join(
        f"{count} x {status or 'no answer'}"
        for status, count in sorted(figure.refused.items())
        if count
    )
    return f"  {figure.name:<32}{shown[0]}{shown[1]}   <= {figure.floor:>4,.0f} {unit}  {verdict:<7}{refused}"


def run(
    *, spans: int, records: int, flows: int, requests: int, seconds: float, clients: int, workers: int,
    yes_wipe: bool, reuse_world: bool, report: Callable[[str], None],
) -> None:  # fmt: skip
    database_check(yes_wipe=yes_wipe)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    report(f"bench flows on {machine()}; database {connection.settings_dict['NAME']}")
    if not reuse_world:
        world_report(spans=spans, records=records, flows=flows, report=report)
    api_token, session = support_session()
    plan = reads_plan(size=min(requests, 2000), api_token=api_token, session=session)
    ingest = ingest_token_create(sender=SENDER, systems=[], actor="bench").secret
    with live_server(workers=workers) as url:
        report(
            f"reads: {requests} requests each, {clients} clients, {workers} gunicorn workers (p50, p95)"
        )
        for figure in reads_measure(url, plan, requests=requests, clients=clients):
            report(figure_line(figure))
        with celery_running() as log:
            lag = lag_measure(url, token=ingest, seconds=seconds, span_rate=5000, record_rate=1000)
    lag_report(lag, log, report)


def world_report(*, spans: int, records: int, flows: int, report: Callable[[str], None]) -> None:
    world = world_generate(spans=spans, records=records, flows=flows, now=timezone.now())
    report(
        f"world: {world.spans:,} spans, {world.records:,} records, {world.orders:,} orders, "
        f"{world.dead_letters:,} dead letters, {world.batches} nightly batch traces; "
        f"generated in {world.seconds:,.0f} s ({world.spans / world.seconds:,.0f} spans/s)"
    )
    summarized = world_summarize(now=timezone.now())
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in sorted(summarized.statuses.items())
    )
    report(
        f"summary: {summarized.flows:,} flows summarized in {summarized.seconds:,.0f} s "
        f"({summarized.flows / summarized.seconds:,.0f} flows/s): {statuses}"
    )


def lag_report(lag: Lag, log: Path, report: Callable[[str], None]) -> None:
    ingest, figure = lag.ingest, lag.figure
    report(
        f"ingest alongside, for {ingest.seconds:.0f} s: {ingest.spans / ingest.seconds:,.0f} spans/s "
        f"(target 5,000), {ingest.records / ingest.seconds:,.0f} records/s (target 1,000)"
        + (f"; refused: {dict(ingest.refused)}" if ingest.refused else "")
    )
    worst = max(figure.values, default=0.0)
    report(
        figure_line(figure, unit="s")
        + f"  max {worst:.2f} s over {len(figure.values)} probes"
        + (
            f"; {lag.unseen} not current {DRAIN_SECONDS:.0f} s after ingest stopped"
            if lag.unseen
            else ""
        )
    )
    report(f"  flow-touch marks waiting when ingest stopped: {lag.backlog:,}; Celery log: {log}")
