"""The company's scheduled work: batch-release (MES → QMS → WMS) every 40 minutes, and
stock-sync, the WMS→ERP stock export every 15 minutes that stops on Friday night."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from console.simulator import records as payloads
from console.simulator.telemetry import Hop
from console.simulator.world import Batch, StockRun

if TYPE_CHECKING:
    from console.simulator.engine import Engine

MS = timedelta(milliseconds=1)
# QMS approves batches it could not take during an outage this long after it is back.
QMS_CATCH_UP = timedelta(minutes=10)


class BatchRelease:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, batch: Batch) -> None:
        engine, at = self.engine, batch.produced_at
        hop = engine.services.span(
            "MES", "batch.produce", at=at, took=90 * MS, correlation=batch.number,
            kind=SpanKind.PRODUCER, attributes={"business.batch": batch.number},
        )  # fmt: skip
        self._delivered("MES", "batch.produce", batch, at, hop)
        approve_at = at + batch.approve_after
        outage = engine.world.qms_down
        if outage is not None and outage[0] <= approve_at < outage[1]:
            approve_at = outage[1] + QMS_CATCH_UP  # a batch waits for QMS; it is not lost
        engine.at(approve_at, lambda: self.approved(batch, hop, approve_at))

    def approved(self, batch: Batch, sent: Hop, at: datetime) -> None:
        engine = self.engine
        hop = engine.services.span(
            "QMS", "batch.approve", at=at, took=150 * MS, linked=(sent,), kind=SpanKind.CONSUMER,
            attributes={"business.batch": batch.number},
        )  # fmt: skip
        self._delivered("QMS", "batch.approve", batch, at, hop)
        stock_at = at + batch.stock_after
        engine.at(stock_at, lambda: self.stocked(batch, hop, stock_at))

    def stocked(self, batch: Batch, sent: Hop, at: datetime) -> None:
        hop = self.engine.services.span(
            "WMS", "stock.receive", at=at, took=70 * MS, linked=(sent,), kind=SpanKind.CONSUMER,
            attributes={"business.batch": batch.number},
        )  # fmt: skip
        self._delivered("WMS", "stock.receive", batch, at, hop)

    def _delivered(self, system: str, step: str, batch: Batch, at: datetime, hop: Hop) -> None:
        message = f"{step.split('.')[1]}-{batch.number}-{self.engine.run_tag}"
        for offset, event in enumerate(("received", "delivered")):
            self.engine.sink.add(
                system, step, event, at + offset * 40 * MS, correlation=batch.number,
                message_id=message, hop=hop, business_keys={"batch": batch.number},
                payload=payloads.batch_json(batch), content_type="application/json",
            )  # fmt: skip


class StockSync:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def run(self, run: StockRun) -> None:
        engine, at, correlation = self.engine, run.at, run.correlation_id
        counts = {"expected": run.lines_expected, "processed": run.lines_processed}
        export = engine.services.span(
            "WMS", "stock.export", at=at, took=timedelta(seconds=4), correlation=correlation,
            kind=SpanKind.PRODUCER, attributes={"stock.lines": run.lines_processed},
        )  # fmt: skip
        message = f"stock-{correlation}-{engine.run_tag}"
        csv = payloads.stock_csv(run)
        for offset, event in enumerate(("transformed", "delivered")):
            engine.sink.add(
                "WMS", "stock.export", event, at + offset * timedelta(seconds=2),
                correlation=correlation, message_id=message, hop=export,
                business_keys={"snapshot": correlation}, payload=csv, content_type="text/csv",
                counts=counts,
            )  # fmt: skip
        imported_at = at + timedelta(seconds=40)
        hop = engine.services.span(
            "ERP", "stock.import", at=imported_at, took=timedelta(seconds=3), parent=export,
            kind=SpanKind.CONSUMER, attributes={"stock.lines": run.lines_processed},
        )  # fmt: skip
        engine.sink.add(
            "ERP", "stock.import", "delivered", imported_at, correlation=correlation,
            message_id=message, hop=hop, business_keys={"snapshot": correlation}, counts=counts,
        )  # fmt: skip
