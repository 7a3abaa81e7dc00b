"""The running example through the real ingest endpoints: stitching, status and "stopped at"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command

from tests.tracing.seafood import Runtime, definitions_load, new_span_id, new_trace
from tracing.flows.models import FlowInstance, FlowKey, FlowTrace
from tracing.flows.selectors import flows_facts
from tracing.flows.services import summary
from tracing.flows.services.summary import flows_mark_stalled, flows_summarize

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=6)


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


def flow(correlation_id: str) -> FlowInstance:
    return FlowInstance.objects.select_related("definition").get(correlation_id=correlation_id)


def test_a_dead_lettered_certificate_fails_the_order_at_certificate_approved(
    runtime: Runtime,
) -> None:
    runtime.order("4711", T0, until="production.notify")
    runtime.send()
    runtime.dead_letter("QMS", T0 + timedelta(minutes=40), correlation="4711")
    flows_summarize(now=NOW)
    order = flow("4711")
    assert order.status == "failed"
    assert order.definition is not None and order.definition.name == "order-to-invoice"
    assert order.stopped_at == "certificate_approved"
    assert order.sentence.startswith(
        "Stopped at Certificate approved (QMS): the message to QMS was dead-lettered at "
    )
    assert "HTTP 503 from QMS" in order.sentence
    # Production notified at T0+20 min, so due at T0+50 min; now is T0+6 h.
    assert order.sentence.endswith("5 h 10 min overdue (due 30 min after Production notified).")
    assert order.steps["production_notified"]["state"] == "done"
    assert order.steps["certificate_approved"]["state"] == "failed"


def test_an_order_that_simply_stops_is_stalled_once_its_deadline_passes(runtime: Runtime) -> None:
    runtime.order("4712", T0, until="stock.reserve")
    runtime.send()
    reserved = T0 + timedelta(minutes=10)
    flows_summarize(now=reserved + timedelta(minutes=5))
    order = flow("4712")
    assert order.status == "in_progress"
    assert order.stopped_at == "production_notified"
    assert order.due_at == reserved + timedelta(minutes=30)
    assert "next Production notified (MES), due by" in order.sentence

    assert flows_mark_stalled(now=reserved + timedelta(minutes=29)) == 0
    assert flows_mark_stalled(now=reserved + timedelta(minutes=30 + 192)) == 1
    order = flow("4712")
    assert order.status == "stalled"
    assert order.sentence.startswith(
        "Stopped at Production notified (MES): nothing since Stock reserved at "
    )
    assert order.sentence.endswith("3 h 12 min overdue (due 30 min after Stock reserved).")


def test_the_stalled_sweep_takes_a_burst_of_due_orders_a_few_at_a_time(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    for order in ("4790", "4791", "4792"):
        runtime.order(order, T0, until="stock.reserve")
    runtime.send()
    flows_summarize(now=T0 + timedelta(minutes=15))
    monkeypatch.setattr(summary, "STALLED_BATCH", 2)
    assert flows_mark_stalled(now=T0 + timedelta(hours=2)) == 3
    assert {flow(order).status for order in ("4790", "4791", "4792")} == {"stalled"}
    assert all(flow(order).sentence.endswith("overdue (due 30 min after Stock reserved).")
               for order in ("4790", "4791", "4792"))  # fmt: skip


def test_the_stalled_sweep_leaves_a_flow_with_news_waiting_to_the_summarizer(
    runtime: Runtime,
) -> None:
    """Production notified arrives a minute before its deadline; the sweep runs before the
    summarizer has read it. The order must not show as stalled on the strength of old facts."""
    runtime.order("4793", T0, until="stock.reserve")
    runtime.send()
    flows_summarize(now=T0 + timedelta(minutes=15))
    runtime.record("MES", "production.notify", "delivered", T0 + timedelta(minutes=39),
                   correlation="4793", business_keys={"order": "4793"})  # fmt: skip
    runtime.send()
    due = T0 + timedelta(minutes=41)  # Production notified was due at T0 + 40 min
    assert flows_mark_stalled(now=due) == 0
    assert flow("4793").status == "in_progress"
    flows_summarize(now=due)
    order = flow("4793")
    assert order.status == "in_progress" and "production_notified" in order.steps_done


def test_an_order_that_completes_is_completed(runtime: Runtime) -> None:
    runtime.order("4713", T0, until="invoice.basis")
    runtime.send()
    flows_summarize(now=NOW)
    order = flow("4713")
    assert order.status == "completed", order.sentence
    assert order.completed_at == T0 + timedelta(minutes=50)
    assert order.steps_done == [
        "order_created", "stock_reserved", "production_notified", "certificate_approved",
        "shipment_booked", "invoice_basis_sent",
    ]  # fmt: skip
    assert order.sentence.endswith("Invoice basis sent (FIN), 50 min after it started.")
    assert order.systems == ["ERP", "FIN", "MES", "QMS", "TMS", "WMS"]


def test_an_async_hop_through_a_span_link_is_one_flow(runtime: Runtime) -> None:
    order_trace, consumer_trace = new_trace(), new_trace()
    producer = runtime.span("ERP", "order.create", T0, trace=order_trace, correlation="4714")
    # The WMS consumer runs in a trace of its own, linked to the producer; no correlation ID.
    runtime.span(
        "WMS", "stock.reserve.consume", T0 + timedelta(minutes=2), trace=consumer_trace,
        links=[(order_trace, producer)],
    )  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    assert flow("4714").trace_count == 2
    assert set(FlowTrace.objects.filter(correlation_id="4714").values_list("via", flat=True)) == {
        "correlated", "link",
    }  # fmt: skip
    spans = flows_facts(["4714"])["4714"].spans
    assert [span.name for span in spans] == ["order.create", "stock.reserve.consume"]


def test_the_link_arriving_before_the_trace_it_points_to_still_joins(runtime: Runtime) -> None:
    order_trace, consumer_trace, producer = new_trace(), new_trace(), new_span_id()
    runtime.span("WMS", "stock.reserve.consume", T0 + timedelta(minutes=2), trace=consumer_trace,
                 links=[(order_trace, producer)])  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    runtime.span("ERP", "order.create", T0, trace=order_trace, correlation="4715", span_id=producer)
    runtime.send()
    flows_summarize(now=NOW)
    assert flow("4715").trace_count == 2


def test_a_batch_trace_shared_by_three_orders_shows_each_only_its_part(runtime: Runtime) -> None:
    orders = {order: new_trace() for order in ("5001", "5002", "5003")}
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
        item = runtime.span("FIN", "invoice.item", T0 + timedelta(hours=1, seconds=1),
                            trace=batch, parent=run, correlation=order)  # fmt: skip
        runtime.span(
            "FIN", "invoice.render", T0 + timedelta(hours=1, seconds=2), trace=batch, parent=item
        )
    runtime.send()
    flows_summarize(now=NOW)
    for order in orders:
        spans = flows_facts([order])[order].spans
        assert [span.name for span in spans] == [
            "order.create", "invoice.batch", "invoice.item", "invoice.render",
        ], order  # fmt: skip
        assert {span.correlation_id for span in spans} == {order, None}
        assert flow(order).trace_count == 2
    # None of the orders reached the others' traces through the batch.
    assert FlowTrace.objects.filter(correlation_id="5001").count() == 2


def test_a_flow_is_findable_by_its_shipment_number(runtime: Runtime) -> None:
    runtime.order("4716", T0, until="certificate.approve")
    runtime.record("TMS", "shipment.book", "delivered", T0 + timedelta(minutes=50), correlation="4716",
                   business_keys={"shipment": "SHP-99120"})  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    assert list(
        FlowKey.objects.filter(value="SHP-99120").values_list("name", "correlation_id")
    ) == [("shipment", "4716")]


def test_a_stock_export_that_moved_800_of_12000_lines_is_partial(runtime: Runtime) -> None:
    runtime.record("WMS", "stock.export", "delivered", T0, correlation="stock-sync-0615",
                   counts={"expected": 12000, "processed": 800})  # fmt: skip
    runtime.record(
        "ERP", "stock.import", "delivered", T0 + timedelta(minutes=2), correlation="stock-sync-0615"
    )
    runtime.send()
    flows_summarize(now=NOW)
    run = flow("stock-sync-0615")
    assert run.status == "partial"
    assert run.definition is not None and run.definition.name == "stock-sync"
    assert "processed 800 of 12,000 items" in run.sentence


def test_an_error_span_is_the_latest_word_and_fails_the_flow(runtime: Runtime) -> None:
    trace = runtime.order("4717", T0, until="certificate.approve")
    runtime.span("TMS", "shipment.book", T0 + timedelta(minutes=45), trace=trace, correlation="4717",
                 error="carrier API refused the booking", attributes={"http.response.status_code": 422})  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    order = flow("4717")
    assert order.status == "failed"
    assert order.stopped_at == "shipment_booked"
    assert "(HTTP 422) — carrier API refused the booking" in order.sentence


def test_an_edited_definition_leaves_running_instances_on_their_version(
    runtime: Runtime, tmp_path: pytest.TempPathFactory
) -> None:
    runtime.order("4718", T0, until="stock.reserve")
    runtime.send()
    flows_summarize(now=NOW)
    started_under = flow("4718").definition
    assert started_under is not None and started_under.version == 1
    edited = tmp_path / "flows.yaml"  # type: ignore[operator]
    from tests.tracing.seafood import SEAFOOD

    edited.write_text(SEAFOOD.read_text().replace("deadline: 15m", "deadline: 20m"))
    call_command("flows", "import", str(edited), stdout=open("/dev/null", "w"))  # noqa: SIM115
    runtime.record(
        "MES", "production.notify", "delivered", T0 + timedelta(minutes=20), correlation="4718"
    )
    runtime.send()
    runtime.order("4719", T0, until="stock.reserve")
    runtime.send()
    flows_summarize(now=NOW)
    assert flow("4718").definition == started_under
    assert flow("4719").definition is not None and flow("4719").definition.version == 2  # type: ignore[union-attr]


def test_summarizing_twice_changes_nothing_and_leaves_no_marks(runtime: Runtime) -> None:
    runtime.order("4720", T0, until="shipment.book")
    runtime.send()
    assert flows_summarize(now=NOW) == 1
    first = flow("4720")
    assert flows_summarize(now=NOW) == 0
    from tracing.flows.services.summary import flows_recompute

    flows_recompute(correlation_ids=["4720"], now=NOW)
    again = flow("4720")
    assert (again.status, again.sentence, again.steps) == (
        first.status,
        first.sentence,
        first.steps,
    )


def test_a_step_whose_clock_runs_backwards_is_marked_not_reordered(runtime: Runtime) -> None:
    trace = runtime.order("4721", T0, until="order.create")
    # MES's clock is 20 minutes behind: production is notified "before" stock was reserved.
    runtime.record("WMS", "stock.reserve", "delivered", T0 + timedelta(minutes=30), correlation="4721",
                   trace_id=trace)  # fmt: skip
    runtime.record("MES", "production.notify", "delivered", T0 + timedelta(minutes=10), correlation="4721",
                   trace_id=trace)  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    steps = flow("4721").steps
    assert steps["production_notified"]["state"] == "done"
    assert steps["production_notified"]["backwards"] is True
    assert steps["stock_reserved"]["backwards"] is False


def test_a_batch_trace_joined_only_by_records_is_no_bridge_between_orders(runtime: Runtime) -> None:
    orders = {order: new_trace() for order in ("6001", "6002")}
    roots = {
        o: runtime.span("ERP", "order.create", T0, trace=t, correlation=o)
        for o, t in orders.items()
    }
    batch = new_trace()
    runtime.span(
        "WMS", "reserve.batch", T0 + timedelta(minutes=5), trace=batch,
        links=[(trace, roots[order]) for order, trace in orders.items()],
    )  # fmt: skip
    for order in orders:  # the batch's spans carry no correlation; its records do
        runtime.record("WMS", "stock.reserve", "delivered", T0 + timedelta(minutes=6), correlation=order,
                       trace_id=batch)  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    for order, trace in orders.items():
        members = set(
            FlowTrace.objects.filter(correlation_id=order).values_list("trace_id", flat=True)
        )
        assert {bytes(m).hex() for m in members} == {trace, batch}, order


def test_a_resolved_dead_letter_leaves_the_order_waiting_then_stalled(runtime: Runtime) -> None:
    from replay.services import dead_letter_close
    from tracing.ingest.models import DeadLetter

    runtime.order("4722", T0, until="production.notify")
    runtime.send()
    runtime.dead_letter("QMS", T0 + timedelta(minutes=40), correlation="4722")
    flows_summarize(now=NOW)
    assert flow("4722").status == "failed"
    letter = DeadLetter.objects.get(correlation_id="4722")
    dead_letter_close(
        dead_letter_id=letter.id, version_seen=letter.version, state="resolved",
        reason="QMS approved it by hand", actor="test", now=NOW,
    )  # fmt: skip
    flows_summarize(now=NOW)
    order = flow("4722")
    assert order.status == "stalled", order.sentence
    assert order.stopped_at == "certificate_approved"
    assert order.due_at == T0 + timedelta(minutes=50)


def test_a_rerun_that_processes_every_line_clears_partial(runtime: Runtime) -> None:
    runtime.record("WMS", "stock.export", "delivered", T0, correlation="stock-sync-0630",
                   counts={"expected": 12000, "processed": 800})  # fmt: skip
    runtime.record("WMS", "stock.export", "delivered", T0 + timedelta(minutes=1), correlation="stock-sync-0630",
                   counts={"expected": 12000, "processed": 12000})  # fmt: skip
    runtime.record(
        "ERP", "stock.import", "delivered", T0 + timedelta(minutes=2), correlation="stock-sync-0630"
    )
    runtime.send()
    flows_summarize(now=NOW)
    assert flow("stock-sync-0630").status == "completed"


def test_reading_a_flows_spans_touches_only_the_days_that_hold_them(runtime: Runtime) -> None:
    import json as json_module

    from django.db import connection

    runtime.order("4723", T0, until="stock.reserve")
    runtime.send()
    flows_summarize(now=NOW)
    partitions: set[str] = set()

    def explain(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "FROM ingest_span" in sql and sql.lstrip().upper().startswith("SELECT"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
                plan = json_module.loads(plan) if isinstance(plan, str) else plan
                partitions.update(_relations(plan[0]["Plan"]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        assert [span.name for span in flows_facts(["4723"])["4723"].spans] == ["order.create"]
    assert partitions and len(partitions) <= 2, sorted(partitions)


def _relations(node: dict[str, Any]) -> set[str]:
    found = (
        {node["Relation Name"]}
        if node.get("Relation Name", "").startswith("ingest_span")
        else set()
    )
    for child in node.get("Plans", []):
        found |= _relations(child)
    return found
