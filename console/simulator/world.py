"""The seafood company of DESIGN.md as a plan: who orders what, when, and what goes wrong.

Everything here is decided by one seeded random generator and the moment the history ends,
so `--seed` gives the same world twice: the same order numbers, fates, batches and runs.
Nothing here sends anything; `engine` turns the plan into spans, records and dead letters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Europe/Oslo")
# Seed 0 numbers its orders from 4701 (order 4711 is the one support asks about); other
# seeds from further up, so another world on the same Tideline does not reuse its numbers.
FIRST_ORDER = 4701
WORLD_SPACING = 10_000
ORDER_ASKED_ABOUT = 10  # the index of 4711 in seed 0's world: its certificate meets QMS down
STOCK_EVERY = timedelta(minutes=15)
BATCH_EVERY = timedelta(minutes=40)
# The invoice batch is nightly at the company; here it runs every half hour, so that a short
# history already completes flows. It still carries many orders in one trace.
INVOICE_EVERY = timedelta(minutes=30)
# A stock export that moves only part of its lines: this run of the history.
PARTIAL_STOCK_RUN = 2
PRODUCTS = (
    ("SALMON-FIL-1KG", "Salmon fillet 1 kg", 119.0),
    ("COD-LOIN-500G", "Cod loin 500 g", 89.5),
    ("SHRIMP-COOKED-2KG", "Cooked shrimp 2 kg", 249.0),
    ("MACKEREL-SMK-300G", "Smoked mackerel 300 g", 54.0),
    ("HALIBUT-STK-400G", "Halibut steak 400 g", 179.0),
)
CUSTOMERS = ("Fiskehallen AS", "Nordhav Retail", "Bryggen Mat", "Kystkjøkken", "Havgull Engros")
# The first orders carry one failure each: a TMS booking that hangs (stalled after its 2 h
# deadline, so only in a longer history), a bad invoice basis, and a production message MES
# took and never finished (stalled within half an hour, so even a 2 h history shows one).
FATES = ("tms_hang", "bad_invoice", "mes_hang")


@dataclass(frozen=True)
class OrderLine:
    sku: str
    name: str
    quantity: int
    unit_price: float


@dataclass(frozen=True)
class Order:
    """One instance of order-to-invoice: its numbers, lines, and the times of its steps."""

    number: str
    customer: str
    lines: tuple[OrderLine, ...]
    created_at: datetime
    fate: str  # completed | tms_hang | bad_invoice | mes_hang; a QMS outage overrides it by time
    reserve_after: timedelta
    production_after: timedelta
    certificate_after: timedelta
    shipment_after: timedelta

    @property
    def shipment(self) -> str:
        return f"SHP-{self.number}"

    @property
    def invoice(self) -> str:
        return f"INV-{self.number}"

    @property
    def amount(self) -> float:
        return round(sum(line.quantity * line.unit_price for line in self.lines), 2)

    @property
    def reserved_at(self) -> datetime:
        return self.created_at + self.reserve_after

    @property
    def production_at(self) -> datetime:
        return self.reserved_at + self.production_after

    @property
    def certificate_at(self) -> datetime:
        return self.production_at + self.certificate_after

    @property
    def shipment_at(self) -> datetime:
        return self.certificate_at + self.shipment_after


@dataclass(frozen=True)
class Batch:
    """One instance of batch-release: a production batch approved by QMS, then stocked."""

    number: str
    product: str
    produced_at: datetime
    approve_after: timedelta
    stock_after: timedelta


@dataclass(frozen=True)
class StockRun:
    """One run of stock-sync, the WMS→ERP stock export every 15 minutes."""

    index: int
    at: datetime
    lines_expected: int
    lines_processed: int

    @property
    def correlation_id(self) -> str:
        return f"stock-sync-{self.at.astimezone(UTC):%Y%m%d-%H%M}"


@dataclass
class World:
    seed: int
    now: datetime  # where the history ends and live begins
    start: datetime
    rate_per_minute: float
    rng: random.Random
    orders: list[Order] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    stock_runs: list[StockRun] = field(default_factory=list)
    stock_stops_at: datetime | None = None
    qms_down: tuple[datetime, datetime] | None = None

    def qms_down_at(self, at: datetime) -> bool:
        return self.qms_down is not None and self.qms_down[0] <= at < self.qms_down[1]

    @property
    def first_order(self) -> int:
        return FIRST_ORDER + WORLD_SPACING * (self.seed % 1000)

    def order_numbered(self, number: str) -> Order | None:
        index = int(number) - self.first_order if number.isdigit() else -1
        return self.orders[index] if 0 <= index < len(self.orders) else None

    def order_next(self, after: datetime) -> Order:
        """The next order, an exponential gap after `after` (a Poisson stream at the rate)."""
        gap = timedelta(minutes=self.rng.expovariate(self.rate_per_minute))
        return self._order(after + gap)

    def _order(self, at: datetime) -> Order:
        rng, index = self.rng, len(self.orders)
        products = rng.sample(PRODUCTS, k=rng.randint(1, 3))
        lines = tuple(
            OrderLine(sku=sku, name=name, quantity=rng.randint(5, 120), unit_price=price)
            for sku, name, price in products
        )
        fate = FATES[index] if index < len(FATES) else _fate(rng)
        order = Order(
            number=str(self.first_order + index), customer=rng.choice(CUSTOMERS), lines=lines,
            created_at=at, fate=fate,
            reserve_after=_minutes(rng, 0.5, 3), production_after=_minutes(rng, 2, 10),
            certificate_after=_minutes(rng, 3, 15), shipment_after=_minutes(rng, 5, 30),
        )  # fmt: skip
        self.orders.append(order)
        return order

    def batch_at(self, at: datetime) -> Batch:
        rng = self.rng
        batch = Batch(
            number=f"B{at.astimezone(ZONE):%y%m%d}-{len(self.batches) + 1:03d}",
            product=rng.choice(PRODUCTS)[0], produced_at=at,
            approve_after=_minutes(rng, 10, 60), stock_after=_minutes(rng, 5, 20),
        )  # fmt: skip
        self.batches.append(batch)
        return batch

    def stock_run_at(self, at: datetime) -> StockRun | None:
        """The stock export due at `at`, or None once it has stopped (Friday night)."""
        if self.stock_stops_at is not None and at >= self.stock_stops_at:
            return None
        index = len(self.stock_runs)
        expected = self.rng.randint(11_000, 13_000)
        processed = 800 if index == PARTIAL_STOCK_RUN else expected
        run = StockRun(index=index, at=at, lines_expected=expected, lines_processed=processed)
        self.stock_runs.append(run)
        return run


def _fate(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.01:
        return "tms_hang"
    if roll < 0.02:
        return "bad_invoice"
    return "completed"


def _minutes(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(seconds=round(rng.uniform(low, high) * 60))


def world_plan(*, seed: int, now: datetime, history: timedelta, rate_per_minute: float) -> World:
    """The world up to `now`: the history's orders, batches and stock runs, and its outages."""
    world = World(
        seed=seed, now=now, start=now - history, rate_per_minute=rate_per_minute,
        rng=random.Random(seed),  # noqa: S311 - a reproducible world, not a secret
    )  # fmt: skip
    world.stock_stops_at = friday_night(world.start, now)
    order = world.order_next(world.start)
    while order.created_at < now:
        order = world.order_next(order.created_at)
    world.orders.pop()  # the first order after now belongs to the live part
    world.qms_down = _qms_outage(world, history)
    for at in ticks(world.start, now, BATCH_EVERY):
        world.batch_at(at)
    for at in ticks(world.start, now, STOCK_EVERY):
        world.stock_run_at(at)
    return world


def ticks(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """The moments in [start, end) on a clock of `every` (:00, :15, :30... for 15 minutes)."""
    step = int(every.total_seconds())
    first = int(start.timestamp()) // step * step + step
    count = max(0, int((end.timestamp() - first) // step) + 1)
    moments = [datetime.fromtimestamp(first + i * step, tz=start.tzinfo) for i in range(count)]
    return [moment for moment in moments if moment < end]


def friday_night(start: datetime, now: datetime) -> datetime:
    """When the stock export stops: just after its run of the last Friday 22:15 in the
    history, if it holds one; else two thirds into it, so a short history still ends in
    silence."""
    local = now.astimezone(ZONE)
    days_back = (local.weekday() - 4) % 7
    friday = (local - timedelta(days=days_back)).replace(
        hour=22, minute=15, second=0, microsecond=0
    )
    if friday > now:
        friday -= timedelta(days=7)
    if friday >= start:
        return friday + timedelta(seconds=1)
    return start + (now - start) * 2 / 3


def _qms_outage(world: World, history: timedelta) -> tuple[datetime, datetime]:
    """QMS answers 503 for up to 20 minutes in the history: from the moment the eleventh
    order's certificate is sent (order 4711 in seed 0's world, the one support asks about),
    or from 40% in when the history is too short to hold it."""
    length = min(timedelta(minutes=20), history * 0.15)
    begins = world.start + history * 0.4
    if len(world.orders) > ORDER_ASKED_ABOUT:
        certificate_at = world.orders[ORDER_ASKED_ABOUT].certificate_at
        if certificate_at < world.now - length:
            begins = certificate_at
    return begins, begins + length
