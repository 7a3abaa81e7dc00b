"""Non-events: the stock export that stops on Friday night, and silence that is no alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.models import Missing
from tracing.flows.services.missing import flows_missing_check
from tracing.flows.services.summary import flows_summarize

pytestmark = pytest.mark.django_db


def last_friday() -> datetime:
    """Friday of last week (UTC midnight): within the days ingest keeps, wholly in the past."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=(today.weekday() - 4) % 7 + 7)


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


def stock_sync_runs(runtime: Runtime, first: datetime, last: datetime) -> None:
    at = first
    while at <= last:
        correlation = f"stock-sync-{at:%Y%m%d%H%M}"
        runtime.record("WMS", "stock.export", "delivered", at, correlation=correlation)
        runtime.record(
            "ERP", "stock.import", "delivered", at + timedelta(minutes=1), correlation=correlation
        )
        at += timedelta(minutes=15)
    runtime.send()


def test_stock_sync_stopping_on_friday_night_is_missing_with_the_runs_missed(
    runtime: Runtime,
) -> None:
    friday = last_friday()
    stock_sync_runs(runtime, friday + timedelta(hours=20), friday + timedelta(hours=22, minutes=15))
    flows_summarize(now=friday + timedelta(hours=22, minutes=20))
    from tracing.flows.models import FlowDefinition

    FlowDefinition.objects.update(created_at=friday)
    schedule = Missing.objects.filter(kind="schedule")
    flows_missing_check(now=friday + timedelta(hours=22, minutes=34))
    assert not schedule.exists()

    flows_missing_check(now=friday + timedelta(hours=22, minutes=35))
    assert schedule.get().count == 1
    flows_missing_check(now=friday + timedelta(days=1, minutes=35))
    missing = Missing.objects.get(kind="schedule")
    assert schedule.count() == 1, "the same incident grows, no second one"
    assert missing.definition_name == "stock-sync" and missing.cleared_at is None
    assert missing.count == 9
    assert (
        missing.sentence
        == "stock-sync: no run since Fri 22:15 — expected every 15 min; 9 runs missed."
    )

    monday = friday + timedelta(days=3, hours=7)
    stock_sync_runs(runtime, monday, monday)
    flows_summarize(now=monday + timedelta(minutes=2))
    flows_missing_check(now=monday + timedelta(minutes=3))
    missing.refresh_from_db()
    assert missing.cleared_at == monday + timedelta(minutes=3)


def test_sunday_silence_of_a_weekday_order_flow_is_no_alarm(runtime: Runtime) -> None:
    friday = last_friday()
    from tracing.flows.models import FlowDefinition

    FlowDefinition.objects.update(created_at=friday + timedelta(days=2))  # Sunday 00:00 UTC
    sunday_evening = friday + timedelta(days=2, hours=22)
    flows_missing_check(now=sunday_evening)
    assert not Missing.objects.filter(kind="volume").exists()


def test_a_working_hour_without_orders_is_missing(runtime: Runtime) -> None:
    friday = last_friday()
    thursday = friday - timedelta(days=1)
    from tracing.flows.models import FlowDefinition

    FlowDefinition.objects.update(created_at=thursday)
    # 25 orders between 07:00 and 08:00 Oslo (06:00-07:00 UTC), none from 08:00 to 09:00.
    for number in range(25):
        runtime.order(
            f"70{number:02d}",
            thursday + timedelta(hours=6, minutes=2 * number),
            until="order.create",
        )
    runtime.send()
    flows_summarize(now=thursday + timedelta(hours=8, minutes=5))
    flows_missing_check(now=thursday + timedelta(hours=8, minutes=5))
    shortfalls = list(Missing.objects.filter(kind="volume").values_list("sentence", flat=True))
    assert shortfalls == ["ERP sent 0 orders between 08:00 and 09:00; at least 20 expected."]
