"""Browser tests: Debian's Chromium driven by Playwright against a live server."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from console.access import Role
from tests.conftest import PASSWORD, require_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_service(CHROMIUM.exists(), "Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in the test thread, so Django would refuse
    # the fixtures' ORM calls as "async-unsafe". Allowed only while a browser module runs:
    # the variable must not leak into later tests' subprocesses (`check --deploy` refuses it).
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture
def page(browser: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    call = request.node.stash.get(_reports, {}).get("call")
    if call is not None and call.failed:
        RESULTS.mkdir(exist_ok=True)
        page.screenshot(
            path=str(RESULTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', request.node.name)}.png"),
            full_page=True,
        )
    context.close()


@pytest.fixture
def sign_in(page: Any, make_user: Callable[..., User]) -> Callable[[Role], User]:
    """Sign in through the login page as a new user with the given role."""

    def sign_in_as(role: Role) -> User:
        user = make_user(role)
        page.goto("/login/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
        return user

    return sign_in_as
