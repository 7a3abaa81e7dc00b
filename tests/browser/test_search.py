"""Support types an order number in the header box and lands on the answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from console.access import Role
from tests.browser.conftest import RESULTS
from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.services.summary import flows_summarize

pytestmark = pytest.mark.browser


@pytest.fixture
def failed_order(transactional_db: Any) -> None:
    """Order 4711, its certificate message dead-lettered by QMS."""
    now = datetime.now(UTC)
    definitions_load()
    runtime = Runtime.connected()
    runtime.order("4711", now - timedelta(hours=2), until="production.notify")
    runtime.send()
    runtime.dead_letter("QMS", now - timedelta(hours=1), correlation="4711")
    flows_summarize(now=now)


def test_typing_an_order_number_leads_to_where_it_stopped(
    page: Any, sign_in: Any, failed_order: None
) -> None:
    sign_in(Role.SUPPORT)
    search = page.get_by_role("searchbox", name="Search flows")
    search.press_sequentially("4711", delay=50)
    suggestion = page.locator("#search-suggestions").get_by_role("link", name="4711")
    suggestion.wait_for()  # search as you type: the match shows before Enter
    search.press("Enter")
    page.wait_for_url("**/flows/4711")
    sentence = page.locator(".sentence").first
    assert "Stopped at Certificate approved (QMS)" in sentence.inner_text()
    assert sentence.locator("strong").inner_text() == "Certificate approved"
    failed = page.locator(".step-strip li.state-failed")
    assert failed.count() == 1 and "Certificate approved" in failed.inner_text()
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "search-to-flow.png"), full_page=True)
