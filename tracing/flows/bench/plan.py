"""The world's plan: orders of order-to-invoice over a week, each with its fate and times."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from random import Random

SENDER = "bench-runtime"
SEAFOOD = Path(__file__).resolve().parents[1] / "fixtures" / "seafood.yaml"
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
