"""A support person signs in, finds the search box, is kept out of the admin, signs out."""

from __future__ import annotations

from typing import Any

import pytest

from console.access import Role
from tests.browser.conftest import RESULTS

pytestmark = pytest.mark.browser


def test_support_signs_in_sees_the_dashboard_and_signs_out(page: Any, sign_in: Any) -> None:
    sign_in(Role.SUPPORT)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    search = page.get_by_role("searchbox", name="Search flows")
    assert search.is_visible()
    assert page.get_by_text("alice · support").is_visible()
    assert page.get_by_role("link", name="Ingest tokens").count() == 0
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "dashboard-support.png"))

    search.fill("4711")
    search.press("Enter")
    page.wait_for_url("**/search/?q=4711")
    assert page.get_by_text("No flow, record or trace matches 4711").is_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login/")
    page.goto("/")
    assert "/login/" in page.url


def test_support_is_refused_the_admin_pages(page: Any, sign_in: Any) -> None:
    sign_in(Role.SUPPORT)
    for path in ("/admin/", "/admin/auth/user/", "/settings/ingest-tokens/"):
        response = page.goto(path)
        assert response.status == 403
        assert page.get_by_role("heading", name="Not allowed").is_visible()


def test_an_admin_creates_an_ingest_token_and_sees_it_once(page: Any, sign_in: Any) -> None:
    sign_in(Role.ADMIN)
    page.get_by_role("link", name="Ingest tokens").click()
    page.get_by_label("Sender").fill("runtime-prod")
    page.get_by_label("Systems").fill("ERP,WMS")
    page.get_by_role("button", name="Create ingest token").click()
    secret = page.get_by_test_id("new-token").inner_text()
    assert secret.startswith("tli_")
    page.reload()
    assert page.get_by_test_id("new-token").count() == 0
    assert page.get_by_role("cell", name="ERP, WMS").is_visible()
