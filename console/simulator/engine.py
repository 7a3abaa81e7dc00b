"""The simulator's clock: what happens when, first backdated (the history), then live.

Every step of every flow is an event on one timeline. The history plays all events up to
the moment it ends at once, with their own (past) timestamps; live, the engine sleeps
until each next event is due. New orders arrive at `--rate`; batches, stock exports and
invoice runs come on their clocks; what a target receives moves its flow on.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from console.simulator.backfill import backfill_send
from console.simulator.failures import AmqpDeadLetters, ApiDeadLetters, Letter
from console.simulator.orders import OrderToInvoice
from console.simulator.records import RecordSink
from console.simulator.schedules import BatchRelease, StockSync
from console.simulator.targets import Arrival
from console.simulator.telemetry import Services
from console.simulator.world import BATCH_EVERY, INVOICE_EVERY, STOCK_EVERY, World, ticks

# Without --targets, dead letters name where the company's systems really live.
DEFAULT_ORIGIN = "http://integration.seafood.example/"
# A terminal gets one line rewritten every second; a log (under `serve --demo`) a line a minute.
PROGRESS_EVERY_SECONDS = {True: 1.0, False: 60.0}


@dataclass
class Connections:
    url: str
    token: str
    amqp_url: str | None = None
    amqp_queue: str = "qms.certificates"
    targets_origin: str | None = None


class Engine:
    def __init__(self, world: World, connections: Connections, *, progress: TextIO) -> None:
        self.world = world
        self.run_key = f"{world.seed}-{int(world.now.timestamp())}"
        self.run_tag = hashlib.sha256(self.run_key.encode()).hexdigest()[:6]
        self.services = Services(url=connections.url, token=connections.token)
        self.sink = RecordSink(url=connections.url, token=connections.token, run_key=self.run_key)
        self.api_letters = ApiDeadLetters(client=self.sink.client)
        self.amqp_letters = (
            AmqpDeadLetters(amqp_url=connections.amqp_url, queue=connections.amqp_queue)
            if connections.amqp_url
            else None
        )
        self.origin = connections.targets_origin or DEFAULT_ORIGIN
        self.arrivals: queue.Queue[Arrival] = queue.Queue()
        self.orders = OrderToInvoice(self)
        self.batches = BatchRelease(self)
        self.stock = StockSync(self)
        self._events: list[tuple[datetime, int, Callable[[], None]]] = []
        self._letters_held: list[tuple[Letter, str, bool]] | None = None
        self._order = itertools.count()
        self._progress = progress
        self._phase = "history"
        self._shown_at = 0.0
        self._terminal = progress.isatty()

    def at(self, when: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), action))

    def dead_letter(self, letter: Letter, *, path: str, http_only: bool = False) -> None:
        if self._letters_held is not None:
            self._letters_held.append((letter, path, http_only))
        else:
            self.dead_letter_send(letter, path, http_only)

    def dead_letter_send(self, letter: Letter, path: str, http_only: bool) -> None:
        if self.amqp_letters is not None and not http_only:
            self.amqp_letters.die(letter)
        else:
            self.api_letters.die(letter, url=f"{self.origin}{path}")

    @property
    def dead_letters_sent(self) -> int:
        return self.api_letters.sent + (self.amqp_letters.sent if self.amqp_letters else 0)

    def history_make(self) -> None:
        """Everything of the planned world up to its `now`, backdated, made at once and held
        for `history_send`. Nothing here talks to Tideline, so it may not be up yet."""
        world = self.world
        self.sink.hold()
        self.services.hold()
        self._letters_held = []
        for order in world.orders:
            self.orders.start(order)
        for batch in world.batches:
            self.at(batch.produced_at, lambda batch=batch: self.batches.start(batch))  # type: ignore[misc]
        for run in world.stock_runs:
            self.at(run.at, lambda run=run: self.stock.run(run))  # type: ignore[misc]
        for at in ticks(world.start, world.now, INVOICE_EVERY):
            self.at(at, lambda at=at: self.orders.invoice_batch(at))  # type: ignore[misc]
        self._play_until(world.now)

    def history_send(self) -> None:
        """The history made: the tour's flows first, the rest newest first (backfill)."""
        letters, self._letters_held = self._letters_held or [], None
        backfill_send(self, records=self.sink.take(), spans=self.services.take(), letters=letters)
        self._show(force=True)

    def live(self, *, duration: timedelta | None) -> None:
        """Real time from the end of the history, until `duration` has passed (or forever)."""
        self._phase = "live"
        world = self.world
        ends_at = world.now + duration if duration is not None else None
        self._recurring(world.now, STOCK_EVERY, self._stock_due)
        self._recurring(world.now, BATCH_EVERY, lambda at: self.batches.start(world.batch_at(at)))
        self._recurring(world.now, INVOICE_EVERY, self.orders.invoice_batch)
        self._next_order(world.now)
        while ends_at is None or _now() < ends_at:
            self.catch_up()
            time.sleep(0.2)
        self.close()

    def close(self) -> None:
        self.sink.close()
        self.services.flush()
        self.services.shutdown()
        if self.amqp_letters is not None:
            self.amqp_letters.close()
        self._show(force=True)
        if self._terminal:
            self._progress.write("\n")

    def _stock_due(self, at: datetime) -> None:
        run = self.world.stock_run_at(at)
        if run is not None:
            self.stock.run(run)

    def _recurring(
        self, after: datetime, every: timedelta, action: Callable[[datetime], None]
    ) -> None:
        first = ticks(after, after + every + timedelta(seconds=1), every)[0]

        def again(at: datetime = first) -> None:
            action(at)
            self.at(at + every, lambda: again(at + every))

        self.at(first, again)

    def _next_order(self, after: datetime) -> None:
        order = self.world.order_next(after)
        self.orders.start(order)
        self.at(order.created_at, lambda: self._next_order(order.created_at))

    def _take_arrivals(self) -> None:
        while True:
            try:
                arrival = self.arrivals.get_nowait()
            except queue.Empty:
                return
            order = self.world.order_numbered(arrival.correlation_id)
            if order is not None:
                self.orders.target_reached(
                    path=arrival.path, order=order, carrier=arrival.carrier, at=_now()
                )

    def _play_until(self, until: datetime) -> None:
        while self._events and self._events[0][0] <= until:
            _, _, action = heapq.heappop(self._events)
            action()
            self._show()

    def catch_up(self) -> None:
        """What the targets received and what fell due until now, sent; between the history's
        batches too, so a flow replayed early moves on while older days still arrive."""
        self._take_arrivals()
        self._play_until(_now())
        self.sink.flush()
        self._show()

    def _show(self, *, force: bool = False) -> None:
        moment = time.monotonic()
        if not force and moment - self._shown_at < PROGRESS_EVERY_SECONDS[self._terminal]:
            return
        self._shown_at = moment
        world = self.world
        self._progress.write(
            ("\r" if self._terminal else "")
            + f"simulate [{self._phase}] seed {world.seed}: {len(world.orders)} orders, "
            f"{len(world.batches)} batches, {len(world.stock_runs)} stock exports; "
            f"{self.services.spans_made} spans, {self.sink.sent} records, "
            f"{self.dead_letters_sent} dead letters sent" + ("" if self._terminal else "\n")
        )
        self._progress.flush()


def _now() -> datetime:
    return datetime.now(UTC)
