"""The dashboard as support sees it, fed through the real ingest endpoints.

The clock stands still at NOW for each test (time_machine), so ingest, the summarizer and
the page all agree on the time and the figures are exact.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from console.access import Role
from tests.tracing.seafood import Runtime, definitions_load, new_trace
from tracing.flows.dashboard import dashboard_window
from tracing.flows.models import FlowDefinition, FlowInstance, Missing
from tracing.flows.services.missing import flows_missing_check
from tracing.flows.services.summary import flows_mark_stalled, flows_summarize
from tracing.ingest import activity
from tracing.ingest.models import SenderMinute

pytestmark = pytest.mark.django_db
# Half a minute into a minute: the sender rate then covers exactly 4.5 minutes.
NOW = datetime.now(UTC).replace(second=30, microsecond=0)
T0 = NOW - timedelta(hours=6)
ClientAs = Callable[[Role | None], Client]


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


def page_text(content: bytes) -> str:
    """What a person reads: the tags gone, the entities decoded, the spaces collapsed."""
    inline = re.sub(r"</?(a|strong|span|time)\b[^>]*>", "", content.decode())
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def late_order(runtime: Runtime, order: str, at: datetime) -> None:
    """An order that completes, but whose stock was reserved 20 min after it (15 allowed)."""
    trace = new_trace()
    root = runtime.span("ERP", "order.create", at, trace=trace, correlation=order)
    steps = [
        (20, "WMS", "stock.reserve"), (30, "MES", "production.notify"),
        (40, "QMS", "certificate.approve"), (50, "TMS", "shipment.book"), (60, "FIN", "invoice.basis"),
    ]  # fmt: skip
    for minutes, system, step in steps:
        runtime.record(system, step, "delivered", at + timedelta(minutes=minutes),
                       correlation=order, trace_id=trace, span_id=root)  # fmt: skip


def stock_sync_run(runtime: Runtime, at: datetime) -> None:
    correlation = f"stock-sync-{at:%Y%m%d%H%M}"
    runtime.record("WMS", "stock.export", "delivered", at, correlation=correlation)
    runtime.record(
        "ERP", "stock.import", "delivered", at + timedelta(minutes=1), correlation=correlation
    )


def summarize() -> None:
    flows_summarize(now=NOW)
    flows_mark_stalled(now=NOW)


@pytest.fixture
def seafood_day(runtime: Runtime) -> Runtime:
    """Two completed orders (one late), a failed one, a stalled one; a stock export that
    ran once six hours ago and then stopped."""
    runtime.order("4713", T0, until="invoice.basis")
    late_order(runtime, "4720", T0 + timedelta(minutes=1))
    runtime.order("4711", T0 + timedelta(minutes=2), until="production.notify")
    runtime.order("4712", T0 + timedelta(minutes=3), until="stock.reserve")
    stock_sync_run(runtime, T0)
    runtime.send()
    runtime.dead_letter("QMS", T0 + timedelta(minutes=45), correlation="4711")
    summarize()
    # Only the stock export's silence is under test: the order volume rule stays quiet.
    FlowDefinition.objects.update(created_at=T0 - timedelta(hours=1))
    FlowDefinition.objects.filter(name="order-to-invoice").update(volume=None)
    flows_missing_check(now=NOW)
    return runtime


def test_support_sees_each_flow_counted_by_status_over_the_window(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    assert FlowInstance.objects.get(correlation_id="4720").deadline_missed
    response = client_as(Role.SUPPORT).get("/?window=week")
    assert response.status_code == 200
    text = page_text(response.content)
    assert "Flows started in the last 7 days" in text
    assert "Flow Started Completed In progress Stalled Failed Partial" in text
    assert "Order to invoice 4 2 0 1 1 0" in text
    assert "Stock export WMS to ERP 1 1 0 0 0 0" in text
    assert "Batch release 0 0 0 0 0 0" in text


def test_the_last_hour_holds_none_of_the_orders_of_this_morning(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    text = page_text(client_as(Role.SUPPORT).get("/?window=hour").content)
    assert "Flows started in the last hour" in text
    assert "Order to invoice 0 0 0 0 0 0" in text
    assert "None started in the last hour." in text
    # What needs attention now does not depend on the window.
    assert "Stalled, oldest first 1" in text


def test_the_window_switcher_swaps_only_the_panels_under_htmx(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    client = client_as(Role.SUPPORT)
    full = client.get("/")
    assert b'href="/?window=week"' in full.content and b'hx-get="/?window=week"' in full.content
    fragment = client.get("/?window=week", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert b"<html" not in fragment.content and b"<h1>" not in fragment.content
    assert fragment.content.lstrip().startswith(b'<div id="dashboard-panels"')
    assert b'aria-current="true">7 days</a>' in fragment.content


def test_stalled_failed_and_missing_are_listed_with_links_and_sentences(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    content = client_as(Role.SUPPORT).get("/").content.decode()
    stalled = FlowInstance.objects.get(correlation_id="4712")
    failed = FlowInstance.objects.get(correlation_id="4711")
    missing = Missing.objects.get(definition_name="stock-sync", cleared_at=None)
    assert (stalled.status, failed.status) == ("stalled", "failed")
    assert '<a href="/flows/4712">4712</a>' in content
    assert html.escape(stalled.sentence) in content
    assert '<a href="/flows/4711">4711</a>' in content
    assert "Stopped at Certificate approved (QMS)" in failed.sentence
    assert html.escape(failed.sentence) in content
    assert missing.sentence.startswith("stock-sync: no run since")
    assert html.escape(missing.sentence) in content
    text = page_text(content.encode())
    assert "Stalled, oldest first 1" in text and "Failed, oldest first 1" in text
    assert "Missing, oldest first 1" in text


def test_a_long_list_shows_the_oldest_twenty_and_how_many_more(
    runtime: Runtime, client_as: ClientAs
) -> None:
    for number in range(23):
        runtime.order(f"48{number:02}", T0 + timedelta(minutes=number), until="stock.reserve")
    runtime.send()
    summarize()
    content = client_as(Role.SUPPORT).get("/").content.decode()
    assert "Stalled, oldest first 23" in page_text(content.encode())
    assert '<a href="/flows/4800">4800</a>' in content
    assert '<a href="/flows/4819">4819</a>' in content
    assert '<a href="/flows/4820">' not in content
    assert '<a href="/api/v1/flows?status=stalled">and 3 more</a>' in content


def test_the_funnel_says_how_many_reached_each_step_and_links_to_those_stuck(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    client = client_as(Role.SUPPORT)
    content = client.get("/?window=week").content.decode()
    text = page_text(content.encode())
    assert "Order created (ERP) 4 → Stock reserved (WMS) 4: all there" in text
    assert "Stock reserved (WMS) 4 → Production notified (MES) 3: 1 not there yet" in text
    assert "Production notified (MES) 3 → Certificate approved (QMS) 2: 1 not there yet" in text
    assert "Shipment booked (TMS) 2 → Invoice basis sent (FIN) 2: all there" in text
    link = "/?window=week&amp;definition=order-to-invoice&amp;step=production_notified#stuck"
    assert f'<a href="{link}">1 not there yet</a>' in content

    stuck = client.get(html.unescape(link).split("#")[0]).content.decode()
    stuck_text = page_text(stuck.encode())
    assert "Order to invoice: not at Production notified (MES) yet" in stuck_text
    assert "Stock reserved (WMS) 4 → Production notified (MES) 3: 1 not there yet" in stuck_text
    section = stuck.split('id="stuck"')[1].split("</section>")[0]
    assert '<a href="/flows/4712">4712</a>' in section
    assert "/flows/4711" not in section and "/flows/4713" not in section


def test_an_unknown_funnel_step_says_so(seafood_day: Runtime, client_as: ClientAs) -> None:
    response = client_as(Role.SUPPORT).get("/?definition=order-to-invoice&step=order_created")
    assert response.status_code == 200
    assert "No such funnel step" in page_text(response.content)


def test_sla_compliance_counts_the_completed_within_their_deadlines(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    text = page_text(client_as(Role.SUPPORT).get("/?window=week").content)
    assert (
        "order-to-invoice: 50.0% within its deadlines in the last 7 days (1 of 2 completed)."
        in text
    )
    assert "stock-sync: 100.0% within its deadlines in the last 7 days (1 of 1 completed)." in text
    assert "batch-release: none completed in the last 7 days." in text


def test_a_scheduled_flow_shows_the_age_of_its_last_run(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    content = client_as(Role.SUPPORT).get("/?window=hour").content.decode()
    run = f"stock-sync-{T0:%Y%m%d%H%M}"
    assert f'The last run started 6 h ago: <a href="/flows/{run}">{run}</a>, completed.' in content


def test_dead_letters_waiting_are_counted_per_system_and_state(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    seafood_day.dead_letter("WMS", T0, correlation=None)
    seafood_day.dead_letter("WMS", T0, correlation=None)
    text = page_text(client_as(Role.SUPPORT).get("/").content)
    assert "System New Replay requested In doubt Poison Total" in text
    assert "WMS 2 0 0 0 2 QMS 1 0 0 0 1" in text


def test_ingest_rate_per_sender_counts_what_was_accepted_in_the_last_minutes(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    text = page_text(client_as(Role.SUPPORT).get("/").content)
    minute = (NOW - timedelta(seconds=30)).strftime("%a %-d %b %H:%M")
    # 4 order spans, 15 records and 1 dead letter, over the 4 min 30 s counted so far.
    assert f"runtime-prod spans 0.01/s (4 in the last 5 min) {minute} (under a minute ago)" in text
    assert f"runtime-prod audit records 0.06/s (15 in the last 5 min) {minute}" in text
    assert f"runtime-prod dead letters under 0.01/s (1 in the last 5 min) {minute}" in text


def test_a_sender_silent_for_an_hour_shows_no_rate_but_when_it_last_sent(
    seafood_day: Runtime, client_as: ClientAs
) -> None:
    with time_machine.travel(NOW + timedelta(hours=1, minutes=10), tick=False):
        text = page_text(client_as(Role.SUPPORT).get("/").content)
    assert "runtime-prod spans 0.0/s (0 in the last 5 min)" in text
    assert "(1 h 10 min ago)" in text


def test_today_starts_at_midnight_where_the_console_is() -> None:
    at = datetime(2026, 3, 11, 0, 30, tzinfo=UTC)  # 01:30 in Oslo
    with timezone.override("Europe/Oslo"):
        assert dashboard_window("today", now=at).start == datetime(2026, 3, 10, 23, tzinfo=UTC)
        assert dashboard_window("yesterday", now=at).key == "today"


def test_the_counts_of_one_minute_add_up(db: None) -> None:
    for accepted in (3, 4, 0):
        activity.sender_activity_count(
            sender="erp-adapter", stream="spans", accepted=accepted, at=NOW
        )
    activity.sender_activity_count(
        sender="erp-adapter", stream="spans", accepted=5, at=NOW + timedelta(minutes=1)
    )
    counted = SenderMinute.objects.filter(sender="erp-adapter").order_by("minute")
    assert [(row.minute, row.accepted) for row in counted] == [
        (NOW.replace(second=0), 7),
        (NOW.replace(second=0) + timedelta(minutes=1), 5),
    ]


class _DatabaseAway:
    def cursor(self) -> None:
        raise OperationalError("the database went away")


def test_a_failing_count_never_fails_the_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(activity, "connection", _DatabaseAway())
    runtime.order("4711", T0, until="order.create")
    runtime.send()  # asserts a 200 without rejections
    assert "sender activity not counted" in caplog.text
    assert not SenderMinute.objects.exists()


def test_a_correlation_id_with_markup_is_shown_as_text(
    runtime: Runtime, client_as: ClientAs
) -> None:
    evil = "<script>alert(1)</script>"
    runtime.order(evil, T0, until="stock.reserve")
    runtime.send()
    summarize()
    assert FlowInstance.objects.get(correlation_id=evil).status == "stalled"
    content = client_as(Role.SUPPORT).get("/").content.decode()
    assert evil not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</a>" in content
    assert 'href="/flows/%3Cscript%3Ealert(1)%3C/script%3E"' in content


def test_before_anything_arrives_the_dashboard_says_there_are_no_flows_yet(
    client_as: ClientAs,
) -> None:
    definitions_load()
    text = page_text(client_as(Role.SUPPORT).get("/").content)
    assert "No flows yet" in text
    assert "Tideline has received no spans, audit records or dead letters so far." in text
    assert "Ingest per sender" not in text and "create an ingest token" not in text


def test_the_empty_dashboard_tells_an_admin_how_to_let_a_sender_in(client_as: ClientAs) -> None:
    content = client_as(Role.ADMIN).get("/").content.decode()
    assert 'href="/settings/ingest-tokens/">create an ingest token</a>' in content


def test_dead_letters_alone_are_not_an_empty_dashboard(
    runtime: Runtime, client_as: ClientAs
) -> None:
    runtime.dead_letter("WMS", T0, correlation=None)
    text = page_text(client_as(Role.SUPPORT).get("/").content)
    assert "No flows yet" not in text
    assert "WMS 1 0 0 0 1" in text


@pytest.mark.django_db
def test_sender_counters_are_kept_for_a_week() -> None:
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    for age in (timedelta(days=8), timedelta(days=6)):
        activity.sender_activity_count(
            sender="erp-adapter", stream="spans", accepted=5, at=now - age
        )
    assert activity.sender_activity_forget(now=now) == 1
    assert list(SenderMinute.objects.values_list("minute", flat=True)) == [now - timedelta(days=6)]
