"""An operator replays order 4711's dead certificate and sees it delivered on the flow page."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console.access import Role
from replay.models import Destination
from tests.browser.conftest import RESULTS
from tests.replay import conftest as replay_fixtures
from tests.replay.conftest import Receiver
from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.services.summary import flows_summarize

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The real HTTP target and the real Celery worker of the replay tests.
receiver = replay_fixtures.receiver
worker = replay_fixtures.worker


@pytest.fixture
def failed_order(receiver: Receiver, settings: Any) -> None:
    """Order 4711: QMS refused its certificate; QMS deduplicates by Idempotency-Key."""
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [receiver.origin]
    Destination.objects.create(address_prefix=receiver.url, deduplicates=True)
    now = datetime.now(UTC)
    definitions_load()
    runtime = Runtime.connected()
    runtime.order("4711", now - timedelta(hours=2), until="production.notify")
    runtime.send()
    runtime.dead_letter(
        "QMS", now - timedelta(hours=1), correlation="4711", message_id="msg-cert-4711",
        url=receiver.url, content_type="application/json",
        payload=json.dumps({"order": "4711", "certificate": "C-1"}),
    )  # fmt: skip
    flows_summarize(now=now)


def test_an_operator_replays_a_dead_letter_and_sees_it_delivered_on_the_flow(
    page: Any,
    sign_in: Callable[[Role], Any],
    failed_order: None,
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    sign_in(Role.OPERATOR)
    page.goto("/dead-letters/")
    page.locator("tr", has_text="4711").get_by_role("link", name="Open").click()
    page.wait_for_url("**/dead-letters/*")
    assert "HTTP 503 from QMS" in page.locator(".dead-letter-head").inner_text()

    page.get_by_role("button", name="Replay", exact=True).click()
    page.get_by_text("Replay requested. It is queued and will be sent once.").wait_for()
    # The replays part follows the attempt (htmx, every 2 s) until the worker delivered it.
    page.locator("#replays .attempt-state-delivered").wait_for(timeout=40_000)
    assert "HTTP 200 from 127.0.0.1" in page.locator("#replays").inner_text()
    assert len(receiver.deliveries) == 1
    assert receiver.deliveries[0]["body"] == b'{"order": "4711", "certificate": "C-1"}'
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "replay.png"), full_page=True)

    page.locator(".dead-letter-head").get_by_role("link", name="4711").click()
    page.wait_for_url("**/flows/4711")
    replay_mark = page.locator(".lane", has_text="QMS").locator(".mark-replay")
    assert "replay of dead letter" in (replay_mark.first.get_attribute("title") or "")
    certificate = page.locator(".message", has_text="msg-cert-4711")
    answer = certificate.locator(".answer", has_text="Can it be replayed safely?")
    assert "yes: the target deduplicates by Idempotency-Key" in answer.inner_text()
    page.screenshot(path=str(RESULTS / "replay-flow.png"), full_page=True)
