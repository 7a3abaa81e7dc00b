"""A record naming only its flow moves the flow on from its span digest, as a full recompute would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.tracing.seafood import Runtime, definitions_load, new_trace
from tracing.flows.models import FlowInstance
from tracing.flows.selectors import flows_facts
from tracing.flows.services.summary import flows_recompute, flows_summarize
from tracing.ingest.partitions import partitions_ensure_all
from tracing.ledger.retention import retention_run

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=6)
SHOWN = (
    "status", "sentence", "stopped_at", "last_step", "started_at", "last_activity_at", "due_at",
    "completed_at", "steps", "steps_done", "systems", "deadline_missed", "span_count",
    "record_count", "dead_letter_count", "trace_count", "definition_id",
)  # fmt: skip


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


def shown(correlation_id: str) -> dict[str, object]:
    instance = FlowInstance.objects.get(correlation_id=correlation_id)
    return {name: getattr(instance, name) for name in SHOWN}


def summarize_reading_spans(correlation_id: str) -> tuple[dict[str, object], bool]:
    """Drain the marks; the flow as shown, and whether any span was read for it."""
    with CaptureQueriesContext(connection) as queries:
        flows_summarize(now=NOW)
    return shown(correlation_id), any("FROM ingest_span" in q["sql"] for q in queries)


def test_a_record_naming_only_its_order_moves_it_on_without_reading_its_spans(
    runtime: Runtime,
) -> None:
    trace = runtime.order("7001", T0, until="production.notify")
    for offset in range(1, 6):  # the ERP's own work around the order: spans no step matches
        runtime.span("ERP", "db.query", T0 + timedelta(seconds=offset), trace=trace)
    runtime.span("WMS", "stock.check", T0 + timedelta(minutes=12), trace=trace,
                 error="stock service restarted", attributes={"http.response.status_code": 503})  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    assert FlowInstance.objects.get(correlation_id="7001").stopped_at == "certificate_approved"

    runtime.record("QMS", "certificate.approve", "delivered", T0 + timedelta(minutes=35),
                   correlation="7001", business_keys={"certificate": "C-7001"})  # fmt: skip
    runtime.send()
    moved_on, read_spans = summarize_reading_spans("7001")
    assert not read_spans
    assert moved_on["stopped_at"] == "shipment_booked"
    assert moved_on["record_count"] == 3 and moved_on["span_count"] == 7
    flows_recompute(correlation_ids=["7001"], now=NOW)
    assert shown("7001") == moved_on


def test_a_dead_letter_naming_only_its_order_fails_it_as_a_full_recompute_would(
    runtime: Runtime,
) -> None:
    runtime.order("7002", T0, until="production.notify")
    runtime.send()
    flows_summarize(now=NOW)
    runtime.dead_letter("QMS", T0 + timedelta(minutes=40), correlation="7002")
    failed, read_spans = summarize_reading_spans("7002")
    assert not read_spans
    assert failed["status"] == "failed" and "HTTP 503 from QMS" in str(failed["sentence"])
    flows_recompute(correlation_ids=["7002"], now=NOW)
    assert shown("7002") == failed


def test_an_order_in_a_shared_batch_trace_is_read_whole_again(runtime: Runtime) -> None:
    """A record may anchor another span of a shared trace to the order: no digest stands in."""
    orders = {order: new_trace() for order in ("7003", "7004")}
    roots = {
        o: runtime.span("ERP", "order.create", T0, trace=t, correlation=o)
        for o, t in orders.items()
    }
    batch = new_trace()
    run = runtime.span(
        "FIN", "invoice.batch", T0 + timedelta(hours=1), trace=batch,
        links=[(trace, roots[order]) for order, trace in orders.items()],
    )  # fmt: skip
    for order in orders:
        runtime.span("FIN", "invoice.item", T0 + timedelta(hours=1, seconds=1), trace=batch,
                     parent=run, correlation=order)  # fmt: skip
    runtime.span("FIN", "invoice.render", T0 + timedelta(hours=1, seconds=2), trace=batch,
                 parent=run, attributes={"messaging.message.id": "msg-render-7003"})  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    assert "invoice.render" not in [span.name for span in flows_facts(["7003"])["7003"].spans]

    runtime.record("FIN", "invoice.render", "delivered", T0 + timedelta(hours=1, seconds=3),
                   correlation="7003", message_id="msg-render-7003")  # fmt: skip
    runtime.send()
    after, read_spans = summarize_reading_spans("7003")
    assert read_spans
    assert after["span_count"] == 4  # order.create, the batch, its item, and now the render
    flows_recompute(correlation_ids=["7003"], now=NOW)
    assert shown("7003") == after


def test_after_retention_drops_spans_a_record_reads_its_flow_whole(
    runtime: Runtime, settings: Any
) -> None:
    """A digest may name spans retention has dropped: the next record recomputes the flow
    from what is still stored, as a full recompute would, not from the digest."""
    settings.TIDELINE_SPAN_RETENTION_DAYS = 40
    partitions_ensure_all(now=NOW)  # spans and records may start 40 days back
    long_ago = NOW - timedelta(days=35)
    runtime.order("7100", long_ago, until="production.notify")
    runtime.send()
    flows_summarize(now=NOW)
    assert FlowInstance.objects.get(correlation_id="7100").span_count > 0

    settings.TIDELINE_SPAN_RETENTION_DAYS = 30
    retention_run(now=NOW)
    runtime.record("QMS", "certificate.approve", "delivered", NOW - timedelta(hours=1),
                   correlation="7100")  # fmt: skip
    runtime.send()
    after, read_spans = summarize_reading_spans("7100")

    assert read_spans
    assert after["span_count"] == 0  # what is stored now, not what the digest remembered
