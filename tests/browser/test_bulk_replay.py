"""An operator replays last night's WMS dead letters in bulk from the dead-letter filter and
watches the progress bar reach 100 %; then the page stops asking."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console.access import Role
from replay.models import BulkReplay, Destination
from tests.browser.conftest import RESULTS
from tests.replay import conftest as replay_fixtures
from tests.replay.conftest import Receiver
from tests.tracing.seafood import Runtime

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The real HTTP target and the real Celery worker of the replay tests.
receiver = replay_fixtures.receiver
worker = replay_fixtures.worker

LAST_NIGHT = 12


@pytest.fixture
def wms_down_last_night(receiver: Receiver, settings: Any) -> None:
    """WMS answered 503 to twelve messages last night, and to one two days ago; QMS to two.
    WMS deduplicates by Idempotency-Key, so no approval is needed."""
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [receiver.origin]
    Destination.objects.create(address_prefix=receiver.origin, deduplicates=True)
    now = datetime.now(UTC)
    runtime = Runtime.connected()
    failures = [("WMS", timedelta(hours=10))] * LAST_NIGHT + [
        ("WMS", timedelta(days=2)), ("QMS", timedelta(hours=10)), ("QMS", timedelta(hours=9)),
    ]  # fmt: skip
    for n, (system, ago) in enumerate(failures):
        runtime.dead_letter(
            system, now - ago, correlation=f"5{n:03d}", message_id=f"msg-stock-{n}",
            url=receiver.url, content_type="application/json", payload=f'{{"stock": {n}}}',
        )  # fmt: skip


def test_an_operator_replays_a_filter_in_bulk_and_watches_it_finish(
    page: Any,
    sign_in: Callable[[Role], Any],
    wms_down_last_night: None,
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    sign_in(Role.OPERATOR)
    page.goto("/dead-letters/")
    page.get_by_label("System").select_option("WMS")
    page.get_by_label("Failed in the last").fill("1d")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**age=1d**")
    assert page.locator(".dl-list tbody tr").count() == LAST_NIGHT
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "bulk-replay-filter.png"))

    page.get_by_role("link", name="Replay these in bulk…").click()
    page.wait_for_url("**/bulk-replays/new?**")
    assert page.locator("#bulk-matched").inner_text() == str(LAST_NIGHT)
    assert "The safety check would skip none of them." in page.locator(".bulk-preview").inner_text()
    page.screenshot(path=str(RESULTS / "bulk-replay-preview.png"), full_page=True)
    page.get_by_label("Rate (messages per second; 0: no limit)").fill("4")
    page.get_by_role("button", name="Start bulk replay").click()
    page.wait_for_url("**/bulk-replays/*-*")
    page.get_by_text("Bulk replay started.").wait_for()

    polls: list[str] = []
    page.on(
        "request",
        lambda request: polls.append(request.url) if "/bulk-replays/" in request.url else None,
    )
    # The progress part follows the job (htmx, every 1 s) until the worker has sent them all.
    page.locator('#bulk-bar[value="100"]').wait_for(state="attached", timeout=90_000)
    progress = page.locator("#bulk-progress")
    assert "done" in progress.locator(".dl-state").inner_text()
    assert f"{LAST_NIGHT} of {LAST_NIGHT} dealt with" in progress.inner_text()
    assert progress.locator(".bulk-sent dd").inner_text() == str(LAST_NIGHT)
    assert progress.get_attribute("hx-trigger") is None
    page.screenshot(path=str(RESULTS / "bulk-replay.png"), full_page=True)

    asked = len(polls)
    assert asked > 0, "the page asked for the progress while the job ran"
    time.sleep(3)
    assert len(polls) == asked, "the page stopped polling once the job was done"
    assert sorted(d["body"] for d in receiver.deliveries) == sorted(
        f'{{"stock": {n}}}'.encode() for n in range(LAST_NIGHT)
    )
    assert BulkReplay.objects.get().state == "done"

    page.get_by_role("link", name="Bulk replays").first.click()
    row = page.locator(".bulk-list tbody tr").first
    assert "done" in row.inner_text() and "WMS" in row.inner_text()
