"""/ledger/ for auditors and admins: checkpoints, the key's fingerprint, the last verification,
exports asked for, followed until done and downloaded; support and operators get 403."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from console.access import Role
from console.models import JournalEntry
from tests.tracing.ledger.exportkit import seafood_day, verify_alone
from tests.tracing.seafood import Runtime
from tracing.ledger.export import ledger_export_run
from tracing.ledger.models import ExportJob
from tracing.ledger.services import ledger_verify

pytestmark = pytest.mark.django_db

YESTERDAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@pytest.fixture
def ledger(signing_key: Any, settings: Any, tmp_path: Path) -> None:
    settings.TIDELINE_EXPORT_DIR = tmp_path / "exports"
    seafood_day(Runtime.connected(), YESTERDAY, range(0, 10))
    ledger_verify(now=timezone.now())


def test_an_auditor_sees_checkpoints_the_fingerprint_and_the_last_verification(
    ledger: None, client_as: Any, signing_key: Any
) -> None:
    page = client_as(Role.AUDITOR).get("/ledger/")

    html = page.content.decode()
    assert page.status_code == 200
    assert signing_key.fingerprint in html
    assert 'id="ledger-verification"' in html and "Holds" in html
    assert "Checkpoints" in html and "<td>QMS</td>" in html
    assert '<a href="/ledger/"' in html  # in the navigation


@pytest.mark.parametrize("role", [Role.SUPPORT, Role.OPERATOR])
def test_support_and_operators_get_403_on_the_page_and_the_export(
    ledger: None, client_as: Any, role: Role
) -> None:
    client = client_as(role)

    assert client.get("/ledger/").status_code == 403
    assert client.post("/ledger/exports", {}).status_code == 403
    assert b'href="/ledger/"' not in client.get("/").content
    assert not ExportJob.objects.exists()


def test_an_auditor_exports_follows_and_downloads_a_bundle_that_verifies(
    ledger: None, client_as: Any, signing_key: Any, tmp_path: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    auditor = client_as(Role.AUDITOR)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        answer = auditor.post(
            "/ledger/exports", {"since": YESTERDAY.strftime("%Y-%m-%dT%H:%M"), "system": "QMS"}
        )
    assert answer.status_code == 302 and len(queued) == 1
    job = ExportJob.objects.get()
    polled = auditor.get("/ledger/", headers={"HX-Request": "true", "HX-Target": "exports"})
    assert polled.status_code == 200 and b'hx-trigger="every 2s"' in polled.content

    ledger_export_run(job_id=job.pk, now=timezone.now())  # what the queued task does

    polled = auditor.get("/ledger/", headers={"HX-Request": "true", "HX-Target": "exports"})
    assert polled.status_code == 286 and b"hx-trigger" not in polled.content
    download = auditor.get(f"/ledger/exports/{job.pk}/bundle.zip")
    assert download.status_code == 200
    bundle = tmp_path / "downloaded.zip"
    bundle.write_bytes(b"".join(download.streaming_content))
    result = verify_alone(bundle, "--key", signing_key.fingerprint)
    assert result.returncode == 0 and result.stdout.startswith(f"OK: {job.entries} entries")
    with zipfile.ZipFile(bundle) as opened:
        assert "system QMS" in opened.read("summary.html").decode()
    assert JournalEntry.objects.filter(action="ledger.export.download").count() == 1


def test_a_prior_checkpoint_that_is_not_ours_is_refused_on_the_page(
    ledger: None, client_as: Any
) -> None:
    upload = SimpleUploadedFile(
        "checkpoint.txt", b"elsewhere/tideline/1\n3\nAAAA\n\n\xe2\x80\x94 x y\n"
    )

    answer = client_as(Role.AUDITOR).post("/ledger/exports", {"prior": upload})

    assert answer.status_code == 400
    assert b"not one of this ledger&#x27;s" in answer.content
    assert not ExportJob.objects.exists()


def test_a_download_of_another_path_is_not_served(
    ledger: None, client_as: Any, tmp_path: Path
) -> None:
    from tracing.ledger.export import ExportFilters, ledger_export_request

    job = ledger_export_request(user=None, actor="cli", filters=ExportFilters(), now=timezone.now())
    ExportJob.objects.filter(pk=job.pk).update(state="done", file="../../../etc/passwd")
    assert client_as(Role.AUDITOR).get(f"/ledger/exports/{job.pk}/bundle.zip").status_code == 404
