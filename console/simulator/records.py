"""Audit records as the runtime sends them to `POST /ingest/v1/records`, with the payloads
the seafood company's messages carry: an order as JSON, a quality certificate as XML, a
stock snapshot as CSV, an invoice basis as JSON.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

import httpx

from console.simulator.telemetry import Hop
from console.simulator.world import Batch, Order, StockRun

BATCH_SIZE = 500
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)


class RecordsRefused(Exception):
    """Tideline refused a batch of records for good (4xx): a bug here, not an outage."""


class RecordSink:
    """Collects records and posts them in batches; retries what an overloaded Tideline
    (429, 503, a dropped connection) could not take, as a runtime's outbox would."""

    def __init__(self, *, url: str, token: str, run_key: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.run_key = run_key
        self.pending: list[dict[str, Any]] = []
        self.holding = False
        self.sent = 0
        self._made = 0

    def add(
        self,
        system: str,
        step: str,
        event: str,
        at: datetime,
        *,
        correlation: str,
        message_id: str,
        hop: Hop | None = None,
        business_keys: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        self._made += 1
        record = {
            # Stable within a run and unique across runs: a retried batch is stored once.
            "record_id": f"sim-{self.run_key}-{self._made:07d}",
            "occurred_at": at.isoformat(), "system": system, "step": step, "event": event,
            "message_id": message_id, "correlation_id": correlation,
            "business_keys": business_keys or {},
            **({"trace_id": hop.trace_id, "span_id": hop.span_id} if hop else {}),
            **fields,
        }  # fmt: skip
        self.pending.append(record)
        if len(self.pending) >= BATCH_SIZE and not self.holding:
            self.flush()

    def hold(self) -> None:
        """Keep what is added until `take`: the history is sent in an order of its own."""
        self.holding = True

    def take(self) -> list[dict[str, Any]]:
        taken, self.pending, self.holding = self.pending, [], False
        return taken

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:BATCH_SIZE], self.pending[BATCH_SIZE:]
            self.post(batch)

    def post(self, batch: list[dict[str, Any]]) -> None:
        self._post(batch)
        self.sent += len(batch)

    def _post(self, batch: list[dict[str, Any]]) -> None:
        for delay in (*RETRY_DELAYS, None):
            try:
                response = self.client.post("/ingest/v1/records", json=batch)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return
            if response is not None and response.status_code not in (429, 502, 503, 504):
                raise RecordsRefused(f"HTTP {response.status_code}: {response.text[:500]}")
            if delay is None:
                raise RecordsRefused("Tideline did not take the records after retries")
            time.sleep(delay)

    def close(self) -> None:
        self.flush()
        self.client.close()


def order_json(order: Order) -> str:
    return json.dumps(
        {
            "order": order.number,
            "customer": order.customer,
            "created": order.created_at.isoformat(),
            "lines": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                }
                for line in order.lines
            ],
            "currency": "NOK",
        },
        ensure_ascii=False,
    )


def certificate_xml(order: Order, *, at: datetime) -> str:
    lines = "".join(
        f'<product sku="{escape(line.sku)}" quantity="{line.quantity}">'
        f"<name>{escape(line.name)}</name><listeria>not detected</listeria>"
        '<temperature unit="C">1.8</temperature></product>'
        for line in order.lines
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<certificate id="QC-{order.number}" order="{order.number}" issued="{at.isoformat()}">'
        f"<customer>{escape(order.customer)}</customer>{lines}"
        "<verdict>approved</verdict></certificate>"
    )


def invoice_json(order: Order, *, bad_field: bool) -> str:
    # The bad field: an amount in the customer's local notation, which FIN cannot read.
    currency = "kr" if bad_field else "NOK"
    return json.dumps(
        {
            "order": order.number,
            "invoice": order.invoice,
            "customer": order.customer,
            "amount": order.amount,
            "currency": currency,
            "shipment": order.shipment,
        },
        ensure_ascii=False,
    )


def shipment_json(order: Order) -> str:
    return json.dumps(
        {
            "shipment": order.shipment,
            "order": order.number,
            "consignee": order.customer,
            "pallets": max(1, sum(line.quantity for line in order.lines) // 60),
            "temperature": "chilled",
        },
        ensure_ascii=False,
    )


def stock_csv(run: StockRun, *, sample_lines: int = 20) -> str:
    """The head of the stock snapshot: the whole file has `lines_expected` lines."""
    rows = ["sku,location,quantity,unit,snapshot_at"]
    for index in range(sample_lines):
        sku = f"SKU-{(run.index * 7 + index) % 9000 + 1000:04d}"
        rows.append(
            f"{sku},FRZ-{index % 12 + 1:02d},{(index * 37 + run.index) % 500},kg,{run.at.isoformat()}"
        )
    return "\n".join(rows) + "\n"


def batch_json(batch: Batch) -> str:
    return json.dumps(
        {"batch": batch.number, "product": batch.product, "produced": batch.produced_at.isoformat()}
    )
