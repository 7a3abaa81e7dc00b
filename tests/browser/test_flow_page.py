"""Support opens the flow page of a failed order: the sentence, the failed step, the owner."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console.access import Role
from tests.browser.conftest import RESULTS
from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.services.summary import flows_summarize

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=3)


def failed_order() -> None:
    definitions_load()
    runtime = Runtime.connected()
    trace = runtime.order("4711", T0, until="production.notify")
    customer = {"name": "Kari Nordmann", "email": "kari.nordmann@example.no"}
    runtime.record(
        "ERP", "order.receive", "received", T0 + timedelta(seconds=5), correlation="4711",
        message_id="msg-order-4711", content_type="application/json",
        payload=json.dumps({"order": "4711", "customer": customer}),
    )  # fmt: skip
    runtime.record(
        "QMS", "certificate.approve", "received", T0 + timedelta(minutes=35), correlation="4711",
        message_id="msg-cert-4711", trace_id=trace, content_type="application/xml",
        payload='<certificate batch="B-88"/>',
    )  # fmt: skip
    runtime.send()
    runtime.dead_letter(
        "QMS", T0 + timedelta(minutes=40), correlation="4711", message_id="msg-cert-4711"
    )
    flows_summarize(now=NOW)


def test_support_sees_where_a_failed_order_stopped(page: Any, sign_in: Any) -> None:
    failed_order()
    sign_in(Role.SUPPORT)
    page.goto("/flows/4711")

    sentence = page.locator(".sentence")
    assert "Stopped at Certificate approved (QMS)" in sentence.inner_text()
    assert sentence.locator("strong").inner_text() == "Certificate approved"
    stopped = page.locator(".step[aria-current=step]")
    assert stopped.locator(".step-title").inner_text() == "Certificate approved"
    assert "state-failed" in (stopped.get_attribute("class") or "")
    assert page.get_by_role("link", name="Runbook").get_attribute("href") == (
        "https://wiki.seafood.example/runbooks/qms"
    )
    assert page.get_by_text("kari.nordmann@example.no").count() == 0

    page.locator(".lane", has_text="QMS").locator(".mark-dead_letter").click()
    page.wait_for_url("**#dead-letter-*")
    assert page.locator("tr:target").inner_text().count("HTTP 503 from QMS") == 1
    RESULTS.mkdir(exist_ok=True)
    page.goto("/flows/4711")
    page.screenshot(path=str(RESULTS / "flow-page.png"), full_page=True)


def test_the_page_of_a_running_flow_follows_it_until_it_completes(page: Any, sign_in: Any) -> None:
    definitions_load()
    runtime = Runtime.connected()
    start = datetime.now(UTC) - timedelta(minutes=15)
    runtime.order("4716", start, until="stock.reserve")
    runtime.send()
    flows_summarize(now=datetime.now(UTC))
    sign_in(Role.SUPPORT)
    page.goto("/flows/4716")
    assert page.locator(".badge").inner_text() == "In progress"
    assert page.locator("#flow[hx-trigger]").count() == 1

    steps = ["production.notify", "certificate.approve", "shipment.book", "invoice.basis"]
    for minutes, (system, step) in enumerate(zip(["MES", "QMS", "TMS", "FIN"], steps, strict=True)):
        at = start + timedelta(minutes=11 + minutes)
        runtime.record(system, step, "delivered", at, correlation="4716")
    runtime.send()
    flows_summarize(now=datetime.now(UTC))
    page.locator(".badge.status-completed").wait_for(timeout=12_000)
    assert page.locator("#flow[hx-trigger]").count() == 0
    assert page.locator(".step.state-done").count() == 6
