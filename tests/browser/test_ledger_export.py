"""An auditor exports yesterday's entries on /ledger/, watches a real worker finish the
bundle, downloads it, and verify.py alone says OK with the fingerprint the page shows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console.access import Role
from tests.browser.conftest import RESULTS
from tests.processes import celery_worker, worker_stop
from tests.tracing.ledger.conftest import SIGNING_KEY
from tests.tracing.ledger.exportkit import seafood_day, verify_alone
from tests.tracing.seafood import Runtime
from tracing.ledger.models import ExportJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

YESTERDAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@pytest.fixture
def ledger(settings: Any, tmp_path: Path) -> Iterator[None]:
    settings.TIDELINE_SIGNING_KEY = SIGNING_KEY.text()
    settings.TIDELINE_EXPORT_DIR = tmp_path / "exports"
    seafood_day(Runtime.connected(), YESTERDAY, range(0, 30))
    worker = celery_worker(
        str(tmp_path / "beat-schedule"), beat=False,
        env={"TIDELINE_SIGNING_KEY": SIGNING_KEY.text(), "TIDELINE_EXPORT_DIR": str(tmp_path / "exports")},
    )  # fmt: skip
    yield
    worker_stop(worker)


def test_an_auditor_exports_a_range_watches_it_finish_and_verifies_the_download(
    page: Any, sign_in: Callable[[Role], Any], ledger: None, tmp_path: Path
) -> None:
    sign_in(Role.AUDITOR)
    page.goto("/ledger/")
    fingerprint = page.locator("#ledger-fingerprint").inner_text()
    assert fingerprint == SIGNING_KEY.fingerprint
    page.get_by_label("Entries from").fill(YESTERDAY.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_label("Entries before").fill(
        (YESTERDAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    page.get_by_label("Highlight system").fill("QMS")
    page.get_by_role("button", name="Export", exact=True).click()
    page.get_by_text("queued: entries").wait_for()

    job = ExportJob.objects.get()
    page.locator(f"#export-{job.pk}.export-done").wait_for(timeout=90_000)
    assert page.locator("#exports").get_attribute("hx-trigger") is None
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "ledger-export.png"), full_page=True)

    with page.expect_download() as download:
        page.locator(f"#export-{job.pk}").get_by_role("link", name="Download").click()
    bundle = tmp_path / "downloaded" / "bundle.zip"
    bundle.parent.mkdir()
    download.value.save_as(bundle)
    result = verify_alone(bundle, "--key", fingerprint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {job.entries} entries, tree size {job.checkpoint.size}")
