"""The dashboard's hourly counts: kept by the summarizer, and its figures exactly those of
counting the instances themselves, whatever the window and however the flows moved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.db.models import Count, Q

from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.dashboard import Window, dashboard_window
from tracing.flows.dashboard.hours import completed_counts, started_groups
from tracing.flows.models import FlowDefinition, FlowInstance
from tracing.flows.services.summary import flows_mark_stalled, flows_summarize

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(minute=37, second=12, microsecond=0)
STEPS = ("stock.reserve", "production.notify", "certificate.approve", "shipment.book")


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def orders() -> Runtime:
    """Orders started every 47 minutes over the last two days, carried to different steps."""
    definitions_load()
    runtime = Runtime.connected()
    for number in range(60):
        at = NOW - timedelta(minutes=47 * number + 3)
        until = (*STEPS, "invoice.basis")[number % 5] if number % 7 else "order.create"
        runtime.order(f"77{number:02d}", at, until=until)
    runtime.send()
    summarize()
    return runtime


def summarize() -> None:
    flows_summarize(now=NOW)
    flows_mark_stalled(now=NOW)


def windows() -> list[Window]:
    named = [dashboard_window(key, now=NOW) for key in ("hour", "today", "week")]
    odd = [
        Window("odd", "", "", NOW - timedelta(hours=hours, minutes=minutes), NOW)
        for hours, minutes in ((0, 5), (3, 0), (5, 41), (30, 17))
    ]
    inside_an_hour = Window(
        "inside", "", "", NOW - timedelta(minutes=20), NOW - timedelta(minutes=2)
    )
    return [*named, *odd, inside_an_hour]


def counted_directly(
    window: Window,
) -> tuple[Counter[tuple[str, frozenset[str]]], dict[int, tuple[int, int]]]:
    """What the dashboard counted before the hourly tables: every instance in the window."""
    started = FlowInstance.objects.filter(
        definition__isnull=False, started_at__gte=window.start, started_at__lte=window.now
    )
    groups: Counter[tuple[str, frozenset[str]]] = Counter()
    for instance in started:
        groups[(instance.status, frozenset(instance.steps_done))] += 1
    completed = (
        FlowInstance.objects.filter(
            status="completed", last_activity_at__gte=window.start,
            completed_at__gte=window.start, completed_at__lte=window.now, definition__isnull=False,
        )
        .values_list("definition_id")
        .annotate(finished=Count("pk"), within=Count("pk", filter=Q(deadline_missed=False)))
        .order_by()
    )  # fmt: skip
    return groups, {definition: (finished, within) for definition, finished, within in completed}


def counted_by_hours(
    window: Window,
) -> tuple[Counter[tuple[str, frozenset[str]]], dict[int, tuple[int, int]]]:
    versions = list(FlowDefinition.objects.values_list("id", flat=True))
    groups: Counter[tuple[str, frozenset[str]]] = Counter()
    for status, done, instances in started_groups(versions, window):
        groups[(status, done)] += instances
    shown = Counter({group: count for group, count in groups.items() if count})
    assert all(count > 0 for count in shown.values()), f"a group below zero: {shown}"
    return shown, completed_counts(versions, window)


def recount(table: str) -> tuple[set[tuple[object, ...]], set[tuple[object, ...]]]:
    """The table's rows, and the same counted afresh from the instances (as the migration does)."""
    fresh = {
        "flows_flowhour": """
            SELECT definition_id, date_trunc('hour', started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                   status, steps_done, count(*)
            FROM flows_flowinstance WHERE definition_id IS NOT NULL GROUP BY 1, 2, 3, 4""",
        "flows_flowcompletedhour": """
            SELECT definition_id, date_trunc('hour', completed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                   count(*), count(*) FILTER (WHERE NOT deadline_missed)
            FROM flows_flowinstance WHERE definition_id IS NOT NULL AND status = 'completed'
            GROUP BY 1, 2""",
    }[table]
    columns = {
        "flows_flowhour": "definition_id, hour, status, steps_done, instances",
        "flows_flowcompletedhour": "definition_id, hour, finished, within",
    }[table]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table}")  # noqa: S608 - fixed names
        kept = {
            tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in cursor.fetchall()
        }
        cursor.execute(fresh)
        counted = {
            tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in cursor.fetchall()
        }
    return kept, counted


def test_every_window_counts_exactly_what_the_instances_say(orders: Runtime) -> None:
    assert FlowInstance.objects.filter(status="stalled").exists()
    assert FlowInstance.objects.filter(status="completed").exists()
    for window in windows():
        assert counted_by_hours(window) == counted_directly(window), window


def test_the_hourly_counts_follow_flows_that_move_on(orders: Runtime) -> None:
    """Stalled orders complete after all, one more fails: each leaves its old hour's count."""
    for number in (7, 14, 21):  # stopped at the start; now they carry on to the invoice
        at = NOW - timedelta(minutes=47 * number + 3)
        orders.order(f"77{number:02d}", at, until="invoice.basis")
    orders.send()
    orders.dead_letter("QMS", NOW - timedelta(minutes=1), correlation="7701")
    summarize()
    assert FlowInstance.objects.get(correlation_id="7707").status == "completed"
    assert FlowInstance.objects.get(correlation_id="7701").status == "failed"
    for table in ("flows_flowhour", "flows_flowcompletedhour"):
        kept, counted = recount(table)
        assert kept == counted, table
    for window in windows():
        assert counted_by_hours(window) == counted_directly(window), window


def test_recomputing_flows_that_did_not_change_leaves_the_counts_alone(orders: Runtime) -> None:
    before = recount("flows_flowhour")[0]
    FlowInstance.objects.update(due_at=NOW - timedelta(minutes=1))
    flows_mark_stalled(now=NOW)
    assert recount("flows_flowhour")[0] == before


def test_what_a_clock_running_ahead_puts_past_now_is_in_no_window(orders: Runtime) -> None:
    """A sender's clock runs ahead of ours: one order starts, another completes, later in this
    hour than now. The hour's row holds them already; no window may count them yet."""
    orders.order("7790", NOW + timedelta(minutes=5), until="order.create")
    orders.order("7791", NOW - timedelta(minutes=45), until="invoice.basis")
    orders.send()
    summarize()
    assert FlowInstance.objects.get(correlation_id="7790").started_at > NOW
    ahead = FlowInstance.objects.get(correlation_id="7791")
    assert ahead.status == "completed" and ahead.completed_at is not None
    assert ahead.completed_at > NOW
    for window in windows():
        assert counted_by_hours(window) == counted_directly(window), window
