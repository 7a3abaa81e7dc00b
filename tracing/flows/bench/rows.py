"""The rows ingest would have stored for a planned order: spans over its traces, records, dead letters."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from random import Random
from typing import Any

from tracing.flows.bench.plan import (
    CLIENT,
    CONSUMER,
    ERRORS,
    INVOICE,
    MESSAGE_ID,
    PRODUCER,
    RESOURCE_DIGESTS,
    RESOURCES,
    SENDER,
    SERVER,
    SHIPMENT,
    STEP_MS,
    STEPS,
    SYSTEMS,
    Order,
)
from tracing.ingest.otlp import SpanBatch


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
