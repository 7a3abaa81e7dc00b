"""The running example as a test sends it: spans, records and dead letters of the seafood
company, posted through the real ingest endpoints with an ingest token."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.test import Client

from console.services import ingest_token_create

SEAFOOD = Path(__file__).resolve().parents[2] / "tracing" / "flows" / "fixtures" / "seafood.yaml"


def definitions_load() -> None:
    call_command("flows", "import", str(SEAFOOD), stdout=open("/dev/null", "w"))  # noqa: SIM115


def new_trace() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def _nanos(at: datetime) -> str:
    return str(int(at.timestamp() * 1_000_000) * 1000)


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    typed = []
    for key, value in values.items():
        kind = "intValue" if isinstance(value, int) else "stringValue"
        typed.append({"key": key, "value": {kind: str(value) if kind == "stringValue" else value}})
    return typed


@dataclass
class Runtime:
    """The integration runtime: collects what it did and posts it to Tideline."""

    client: Client = field(default_factory=Client)
    spans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # service → spans
    records: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def connected(cls) -> Runtime:
        token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
        return cls(client=Client(HTTP_AUTHORIZATION=f"Bearer {token}"))

    def span(
        self, service: str, name: str, at: datetime, *, trace: str, correlation: str | None = None,
        parent: str | None = None, error: str = "", links: list[tuple[str, str]] | None = None,
        span_id: str | None = None, attributes: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        span_id = span_id or new_span_id()
        attributes = dict(attributes or {})
        if correlation:
            attributes["correlation.id"] = correlation
        span: dict[str, Any] = {
            "traceId": trace, "spanId": span_id, "name": name, "kind": 1,
            "startTimeUnixNano": _nanos(at), "endTimeUnixNano": _nanos(at + timedelta(milliseconds=40)),
            "attributes": _attributes(attributes),
            "links": [{"traceId": t, "spanId": s} for t, s in links or []],
        }  # fmt: skip
        if parent:
            span["parentSpanId"] = parent
        if error:
            span["status"] = {"code": 2, "message": error}
        self.spans.setdefault(service, []).append(span)
        return span_id

    def record(
        self, system: str, step: str, event: str, at: datetime, *, correlation: str | None,
        **fields: Any,
    ) -> None:  # fmt: skip
        self.records.append({
            "record_id": f"r-{len(self.records)}-{secrets.token_hex(4)}", "occurred_at": at.isoformat(),
            "system": system, "step": step, "event": event, "correlation_id": correlation, **fields,
        })  # fmt: skip

    def dead_letter(
        self, system: str, at: datetime, *, correlation: str | None, **fields: Any
    ) -> None:
        letter = {
            "message_id": f"msg-{secrets.token_hex(4)}", "correlation_id": correlation, "system": system,
            "transport": "http", "url": f"http://{system.lower()}.internal/in", "payload": "<certificate/>",
            "content_type": "application/xml", "error": f"HTTP 503 from {system}", "attempts": 5,
            "first_failed_at": (at - timedelta(minutes=4)).isoformat(), "last_failed_at": at.isoformat(),
            **fields,
        }  # fmt: skip
        response = self.client.post(
            "/ingest/v1/dead-letters", json.dumps(letter), content_type="application/json"
        )
        assert response.status_code == 200, response.content

    def send(self) -> None:
        for service, spans in self.spans.items():
            resource = {"attributes": _attributes({"service.name": service})}
            body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
            response = self.client.post(
                "/v1/traces", json.dumps(body), content_type="application/json"
            )
            assert response.status_code == 200 and b"rejected" not in response.content, (
                response.content
            )
        if self.records:
            response = self.client.post(
                "/ingest/v1/records", json.dumps(self.records), content_type="application/json"
            )
            assert response.status_code == 200, response.content
        self.spans, self.records = {}, []

    def order(self, order: str, at: datetime, *, until: str, trace: str | None = None) -> str:
        """An order of order-to-invoice, carried as far as the step `until` (inclusive)."""
        trace = trace or new_trace()
        root = self.span(
            "ERP",
            "order.create",
            at,
            trace=trace,
            correlation=order,
            attributes={"business.order": order},
        )
        steps = [
            ("WMS", "stock.reserve"), ("MES", "production.notify"), ("QMS", "certificate.approve"),
            ("TMS", "shipment.book"), ("FIN", "invoice.basis"),
        ]  # fmt: skip
        for minutes, (system, step) in enumerate(steps, start=1):
            if until == "order.create":
                break
            self.record(system, step, "delivered", at + timedelta(minutes=10 * minutes),
                        correlation=order, trace_id=trace, span_id=root, business_keys={"order": order})  # fmt: skip
            if step == until:
                break
        return trace
