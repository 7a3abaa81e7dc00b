"""The README tour, page by page, in a simulated world of a fixed seed: each page shows what
the tour says it shows (order 4711's sentence, the QMS dead letters, the dashboard's trouble,
the flow definitions an admin adds to)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from console.access import Role
from tests.browser.conftest import RESULTS
from tests.conftest import PASSWORD
from tests.console.test_simulate import ROOT, simulator_environment
from tests.processes import celery_worker, worker_stop
from tests.tracing.seafood import definitions_load
from tracing.flows.models import FlowInstance
from tracing.flows.services.missing import flows_missing_check

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Seed 0's world numbers its orders from 4701; its eleventh, 4711, meets QMS down.
ORDER = "4711"


@pytest.fixture
def seafood_world(live_server: Any, tmp_path: Path) -> Iterator[None]:
    """`simulate --seed 0 --history 2h` against the live server, summarized by a real worker."""
    definitions_load()
    worker = celery_worker(str(tmp_path / "beat-schedule"))
    command = [
        sys.executable, "manage.py", "simulate", "--url", live_server.url, "--seed", "0",
        "--history", "2h", "--duration", "0",
    ]  # fmt: skip
    subprocess.run(
        command, cwd=ROOT,
        env=simulator_environment(), capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not FlowInstance.objects.filter(correlation_id=ORDER, status="failed").exists():
        assert time.monotonic() < deadline, f"order {ORDER} was not summarized as failed"
        time.sleep(0.5)
    while not FlowInstance.objects.filter(status="stalled").exists():
        assert time.monotonic() < deadline, "no stalled flow"
        time.sleep(0.5)
    yield
    worker_stop(worker, seconds=60)


@pytest.fixture
def signed_in(browser: Any, live_server: Any, make_user: Callable[..., User]) -> Iterator[Any]:
    """A page signed in with a role, each in its own browser context."""
    contexts = []

    def open_as(role: Role) -> Any:
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        contexts.append(context)
        page = context.new_page()
        user = make_user(role)
        page.goto("/login/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
        return page

    yield open_as
    for context in contexts:
        context.close()


def test_each_step_of_the_readme_tour_shows_what_the_tour_says(
    seafood_world: None, signed_in: Callable[[Role], Any]
) -> None:
    RESULTS.mkdir(exist_ok=True)
    # Support finds order 4711 and reads why it stopped.
    support = signed_in(Role.SUPPORT)
    search = support.get_by_role("searchbox", name="Search flows")
    search.press_sequentially(ORDER, delay=50)
    support.locator("#search-suggestions").get_by_role("link", name=ORDER).wait_for()
    search.press("Enter")
    support.wait_for_url(f"**/flows/{ORDER}")
    sentence = support.locator(".sentence").first.inner_text()
    assert "Stopped at Certificate approved (QMS)" in sentence
    assert "the message to QMS was dead-lettered" in sentence and "HTTP 503 from QMS" in sentence
    assert "Quality" in support.content()  # who owns QMS
    support.screenshot(path=str(RESULTS / "tour-support.png"), full_page=True)

    # The operator sees the QMS dead letters waiting, 4711's among them.
    operator = signed_in(Role.OPERATOR)
    operator.goto("/dead-letters/?system=QMS&state=new")
    row = operator.locator("tr", has_text=ORDER)
    assert "HTTP 503 from QMS" in row.inner_text()
    assert operator.locator("tr", has_text="HTTP 503 from QMS").count() >= 2
    operator.screenshot(path=str(RESULTS / "tour-operator.png"), full_page=True)

    # The dashboard: completed, stalled, failed and missing flows, dead letters waiting.
    flows_missing_check(now=timezone.now())
    operator.goto("/")
    for status in ("completed", "stalled", "failed"):
        counts = operator.locator(f"td.count-{status}").all_inner_texts()
        assert sum(int(count or 0) for count in counts) > 0, status
    assert "stock-sync: no run since" in operator.locator(".dashboard-missing").inner_text()
    assert "QMS" in operator.locator(".dashboard-dead-letters").inner_text()

    # The admin adds a flow definition where the current set is listed.
    admin = signed_in(Role.ADMIN)
    admin.goto("/settings/flow-definitions/")
    assert "order-to-invoice" in admin.content()
    admin.screenshot(path=str(RESULTS / "tour-admin.png"), full_page=True)
