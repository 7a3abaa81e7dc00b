"""`bench flows` builds a coherent world: the generator at a tiny size, summarized for real."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from tracing.flows import bench
from tracing.flows.models import FlowInstance, FlowKey, FlowTrace
from tracing.ingest.models import AuditRecord, DeadLetter, FlowTouch, Span

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> bench.World:
    now = timezone.now()
    world = bench.world_generate(spans=2_000, records=500, flows=100, now=now)
    bench.world_summarize(now=now)
    return world


def test_it_stores_the_totals_asked_for_through_ingest(world: bench.World) -> None:
    assert (world.spans, world.records) == (2_000, 500)
    assert (Span.objects.count(), AuditRecord.objects.count()) == (2_000, 500)
    assert world.dead_letters == DeadLetter.objects.count() > 0
    assert not FlowTouch.objects.exists(), "the summarizer drained every mark"


def test_every_order_is_a_flow_with_a_spread_of_statuses(world: bench.World) -> None:
    assert FlowInstance.objects.count() == 100
    statuses = set(FlowInstance.objects.values_list("status", flat=True))
    assert {"completed", "stalled", "failed", "partial"} <= statuses
    assert not FlowInstance.objects.filter(definition=None).exists()


def test_a_failed_order_with_a_dead_letter_names_the_step_and_the_error(
    world: bench.World,
) -> None:
    letter = DeadLetter.objects.first()
    assert letter is not None
    flow = FlowInstance.objects.get(correlation_id=letter.correlation_id)
    assert flow.status == "failed"
    assert f"({letter.system})" in flow.sentence and letter.error in flow.sentence


def test_a_shipment_number_finds_its_order(world: bench.World) -> None:
    shipment = FlowKey.objects.filter(name="shipment").first()
    assert shipment is not None
    order = shipment.value.removeprefix("SHP-")
    assert FlowKey.objects.filter(value=shipment.value).get().correlation_id == order
    assert FlowInstance.objects.get(correlation_id=order).steps_done[-1:] in (
        ["shipment_booked"],
        ["invoice_basis_sent"],
    )


def test_a_nightly_batch_trace_belongs_to_several_orders(world: bench.World) -> None:
    shared = (
        FlowTrace.objects.values("trace_id")
        .annotate(flows=Count("correlation_id"))
        .filter(flows__gt=1)
    )
    assert shared.exists()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT name FROM ingest_span WHERE trace_id = %s AND parent_span_id IS NULL",
            [shared[0]["trace_id"]],
        )
        assert cursor.fetchall() == [("invoice.export",)]


def test_the_warehouse_trace_joins_its_order_through_the_span_link(world: bench.World) -> None:
    assert FlowTrace.objects.filter(via__in=["link", "record"]).exists()
    traces_per_flow = FlowTrace.objects.values("correlation_id").annotate(traces=Count("trace_id"))
    assert {row["traces"] for row in traces_per_flow} >= {2, 3}


def test_it_refuses_a_database_not_named_for_benches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(connection.settings_dict, "NAME", "tideline")
    with pytest.raises(CommandError, match="--yes-wipe"):
        bench.database_check(yes_wipe=False)
    bench.database_check(yes_wipe=True)


@pytest.mark.django_db(transaction=True)
def test_the_world_is_vacuumed_before_it_is_measured() -> None:
    """As autovacuum would have over the week: every flow page visible, statistics fresh."""
    now = timezone.now()
    bench.world_generate(spans=400, records=100, flows=20, now=now)
    bench.world_summarize(now=now)
    assert bench.world_vacuum().checkpoint
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s)"
            " AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL",
            [["flows_flowinstance", "flows_flowtrace", "ingest_deadletter"]],
        )
        assert len(cursor.fetchall()) == 3
        cursor.execute(
            "SELECT relallvisible = relpages FROM pg_class WHERE relname = 'flows_flowinstance'"
        )
        assert cursor.fetchone() == (True,)


def test_a_role_that_may_not_take_a_checkpoint_is_told_so_not_stopped() -> None:
    from tracing.flows.bench.world import _checkpoint

    with connection.cursor() as cursor:
        cursor.execute(
            "DO $$ BEGIN CREATE ROLE tideline_test_no_checkpoint NOLOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        with transaction.atomic():  # the refusal ends only this savepoint
            cursor.execute("SET LOCAL ROLE tideline_test_no_checkpoint")
            assert _checkpoint(cursor) is False
            transaction.set_rollback(True)
