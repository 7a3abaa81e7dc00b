"""order-to-invoice, step by step: ERP order → WMS reservation → MES production → QMS
certificate → TMS shipment → FIN invoice basis, with the failures of the running example.

ERP→WMS and MES→QMS continue a trace; WMS→MES and QMS→TMS are queue hops (a new trace
with a span link); FIN takes shipped orders in an invoice batch, one trace for many orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from console.simulator import records as payloads
from console.simulator.failures import Letter
from console.simulator.telemetry import Hop
from console.simulator.world import Order

if TYPE_CHECKING:
    from console.simulator.engine import Engine

JSON, XML = "application/json", "application/xml"
MS = timedelta(milliseconds=1)
QMS_PATH, FIN_PATH = "qms/certificates", "fin/invoices"
# After a replay reaches its target, the rest of the flow follows within a minute, so an
# operator sees it complete while watching.
AFTER_REPLAY = timedelta(seconds=20)


@dataclass
class Shipped:
    order: Order
    hop: Hop


class OrderToInvoice:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shipped: list[Shipped] = []

    def start(self, order: Order) -> None:
        self.engine.at(order.created_at, lambda: self.created(order))

    def _keys(self, order: Order, **more: str) -> dict[str, str]:
        # Keys that name this order's messages only: a key shared by many orders (the
        # customer) would make every later delivery look like it overtook a dead letter.
        return {"order": order.number, **more}

    def _message(self, order: Order, what: str) -> str:
        return f"{what}-{order.number}-{self.engine.run_tag}"

    def created(self, order: Order) -> None:
        engine, at = self.engine, order.created_at
        hop = engine.services.span(
            "ERP", "order.create", at=at, took=85 * MS, correlation=order.number,
            kind=SpanKind.SERVER, attributes={"business.order": order.number},
        )  # fmt: skip
        message = self._message(order, "order")
        for offset, event in enumerate(("received", "validated", "routed")):
            engine.sink.add(
                "ERP", "order.create", event, at + offset * 20 * MS, correlation=order.number,
                message_id=message, hop=hop,
                business_keys=self._keys(order, customer=order.customer),
                payload=payloads.order_json(order), content_type=JSON,
            )  # fmt: skip
        engine.at(order.reserved_at, lambda: self.reserved(order, hop))

    def reserved(self, order: Order, sent: Hop) -> None:
        engine, at = self.engine, order.reserved_at
        hop = engine.services.span(
            "WMS", "stock.reserve", at=at, took=140 * MS, parent=sent, kind=SpanKind.CONSUMER,
            attributes={"business.order": order.number},
        )  # fmt: skip
        self._received_delivered(
            "WMS", "stock.reserve", order, at, hop, payloads.order_json(order), JSON
        )
        engine.at(order.production_at, lambda: self.production(order, hop))

    def production(self, order: Order, sent: Hop) -> None:
        engine, at = self.engine, order.production_at
        hop = engine.services.span(
            "MES", "production.notify", at=at, took=60 * MS, linked=(sent,),
            kind=SpanKind.CONSUMER, attributes={"messaging.destination.name": "mes.production"},
        )  # fmt: skip
        if order.fate == "mes_hang":  # MES took the message and never finished: it stalls
            engine.sink.add(
                "MES", "production.notify", "received", at, correlation=order.number,
                message_id=self._message(order, "production"), hop=hop,
                business_keys=self._keys(order), payload=payloads.order_json(order),
                content_type=JSON,
            )  # fmt: skip
            return
        self._received_delivered(
            "MES", "production.notify", order, at, hop, payloads.order_json(order), JSON
        )
        engine.at(order.certificate_at, lambda: self.certificate(order, hop))

    def certificate(self, order: Order, sent: Hop) -> None:
        engine, at = self.engine, order.certificate_at
        xml = payloads.certificate_xml(order, at=at)
        if engine.world.qms_down_at(at):
            self._qms_unavailable(order, sent, at, xml)
            return
        hop = engine.services.span(
            "QMS", "certificate.approve", at=at, took=210 * MS, parent=sent, kind=SpanKind.SERVER,
            attributes={"business.order": order.number},
        )  # fmt: skip
        self._received_delivered("QMS", "certificate.approve", order, at, hop, xml, XML)
        engine.at(order.shipment_at, lambda: self.shipment(order, hop, order.shipment_at))

    def _qms_unavailable(self, order: Order, sent: Hop, at: datetime, xml: str) -> None:
        """QMS answers 503 to every retry; the runtime gives up and dead-letters the message."""
        engine, error = self.engine, "HTTP 503 from QMS: Service Unavailable"
        hop = engine.services.span(
            "MES", "certificate.send", at=at, took=30 * MS, parent=sent, kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "http.response.status_code": 503}, error=error,
        )  # fmt: skip
        message, keys = self._message(order, "certificate"), self._keys(order)
        for offset, event in enumerate(("received", "failed")):
            engine.sink.add(
                "QMS", "certificate.approve", event, at + offset * 4 * timedelta(minutes=1),
                correlation=order.number, message_id=message, hop=hop, business_keys=keys,
                content_type=XML, payload=xml, **({"error": error} if event == "failed" else {}),
            )  # fmt: skip
        last = at + 4 * timedelta(minutes=1)
        letter = Letter(
            system="QMS", message_id=message, correlation_id=order.number, payload=xml,
            content_type=XML, headers={**hop.carrier, "X-Correlation-Id": order.number},
            error=error, first_failed_at=at, last_failed_at=last,
        )  # fmt: skip
        engine.dead_letter(letter, path=QMS_PATH)

    def shipment(self, order: Order, sent: Hop, at: datetime) -> None:
        engine = self.engine
        hop = engine.services.span(
            "TMS", "shipment.book", at=at, took=320 * MS, linked=(sent,), kind=SpanKind.CONSUMER,
            attributes={"business.shipment": order.shipment},
        )  # fmt: skip
        keys = self._keys(order, shipment=order.shipment)
        message = self._message(order, "shipment")
        # A booking that hangs: TMS took the message and never answered; the flow stalls.
        events = ("received", "routed") if order.fate == "tms_hang" else ("received", "delivered")
        for offset, event in enumerate(events):
            engine.sink.add(
                "TMS", "shipment.book", event, at + offset * 300 * MS, correlation=order.number,
                message_id=message, hop=hop, business_keys=keys,
                payload=payloads.shipment_json(order), content_type=JSON,
            )  # fmt: skip
        if order.fate != "tms_hang":
            self.shipped.append(Shipped(order=order, hop=hop))

    def invoice_batch(self, at: datetime) -> None:
        """FIN's invoice run: one trace carrying every order shipped since the last run."""
        shipped, self.shipped = self.shipped, []
        if not shipped:
            return
        engine = self.engine
        root = engine.services.span(
            "FIN", "invoice.batch", at=at, took=len(shipped) * 15 * MS + 50 * MS,
            kind=SpanKind.CONSUMER, attributes={"batch.orders": len(shipped)},
        )  # fmt: skip
        for position, item in enumerate(shipped):
            self._invoice(item, root, at + position * 15 * MS)

    def _invoice(self, item: Shipped, batch: Hop, at: datetime) -> None:
        engine, order = self.engine, item.order
        bad = order.fate == "bad_invoice"
        error = "HTTP 422 from FIN: currency 'kr' is not an ISO 4217 code" if bad else ""
        hop = engine.services.span(
            "FIN", "invoice.basis", at=at, took=12 * MS, parent=batch, linked=(item.hop,),
            correlation=order.number, attributes={"business.invoice": order.invoice}, error=error,
        )  # fmt: skip
        body = payloads.invoice_json(order, bad_field=bad)
        message = self._message(order, "invoice")
        keys = self._keys(order, invoice=order.invoice, shipment=order.shipment)
        for offset, event in enumerate(("received", "failed" if bad else "delivered")):
            engine.sink.add(
                "FIN", "invoice.basis", event, at + offset * 5 * MS, correlation=order.number,
                message_id=message, hop=hop, business_keys=keys, payload=body, content_type=JSON,
                **({"error": error} if bad else {}),
            )  # fmt: skip
        if bad:
            letter = Letter(
                system="FIN", message_id=message, correlation_id=order.number, payload=body,
                content_type=JSON, headers={**hop.carrier, "X-Correlation-Id": order.number},
                error=error, first_failed_at=at, last_failed_at=at,
            )  # fmt: skip
            engine.dead_letter(letter, path=FIN_PATH, http_only=True)

    def _received_delivered(
        self, system: str, step: str, order: Order, at: datetime, hop: Hop, payload: str, kind: str
    ) -> None:
        message = self._message(order, step.split(".")[0])
        for offset, event in enumerate(("received", "transformed", "delivered")):
            self.engine.sink.add(
                system, step, event, at + offset * 30 * MS, correlation=order.number,
                message_id=message, hop=hop, business_keys=self._keys(order),
                payload=payload, content_type=kind,
            )  # fmt: skip

    def target_reached(
        self, *, path: str, order: Order, carrier: dict[str, str], at: datetime
    ) -> None:
        """A replayed message reached its target: the step is delivered, the flow moves on."""
        sent = Hop(carrier=carrier, trace_id="", span_id="")
        if path == QMS_PATH:
            hop = self.engine.services.span(
                "QMS", "certificate.approve", at=at, took=180 * MS, parent=sent,
                correlation=order.number, kind=SpanKind.SERVER,
                attributes={"business.order": order.number},
            )  # fmt: skip
            xml = payloads.certificate_xml(order, at=at)
            self._received_delivered("QMS", "certificate.approve", order, at, hop, xml, XML)
            then = at + AFTER_REPLAY
            self.engine.at(then, lambda: self.shipment(order, hop, then))
            self.engine.at(then + AFTER_REPLAY, lambda: self.invoice_batch(then + AFTER_REPLAY))
        elif path == FIN_PATH:
            hop = self.engine.services.span(
                "FIN", "invoice.basis", at=at, took=12 * MS, parent=sent,
                correlation=order.number, attributes={"business.invoice": order.invoice},
            )  # fmt: skip
            self.engine.sink.add(
                "FIN", "invoice.basis", "delivered", at, correlation=order.number,
                message_id=self._message(order, "invoice"), hop=hop,
                business_keys=self._keys(order, invoice=order.invoice),
                payload=payloads.invoice_json(order, bad_field=False), content_type=JSON,
            )  # fmt: skip
