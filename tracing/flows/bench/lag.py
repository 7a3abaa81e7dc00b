"""Summarizer lag: paced ingest of new orders and of next steps of existing ones."""

from __future__ import annotations

import itertools
import json
import queue
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from tracing.flows.bench.plan import INVOICE, MESSAGE_ID, RESOURCES, STEP_KEYS, STEPS
from tracing.flows.bench.reads import Figure, together
from tracing.flows.models import FlowInstance
from tracing.ingest.models import FlowTouch
from tracing.ingest.otlp import EPOCH
from tracing.ingest.records import JSON_ARRAY as JSON

LAG_FLOOR_SECONDS = 5.0
LIVE_SPANS_PER_ORDER, LIVE_ORDERS_PER_REQUEST, LIVE_RECORDS_PER_REQUEST = 20, 13, 100
DRAIN_SECONDS = 60.0


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
    sending = threading.Thread(target=together, args=(clients,))
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
