"""An auditor exports a time range of a real ledger and verifies it offline with verify.py
alone; what was left out or changed is caught, and only auditors and admins may export."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from console.access import Role
from console.models import JournalEntry
from tests.tracing.ledger.exportkit import seafood_day, verify_alone
from tests.tracing.seafood import Runtime
from tracing.ledger.export import (
    ExportFilters,
    ExportForbidden,
    ledger_export_request,
    ledger_export_run,
)
from tracing.ledger.models import Checkpoint, Entry, ExportJob

pytestmark = pytest.mark.django_db

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAYS = [TODAY - timedelta(days=3), TODAY - timedelta(days=2), TODAY - timedelta(days=1)]


@pytest.fixture
def ledger(signing_key) -> Runtime:
    runtime = Runtime.connected()
    for number, day in enumerate(DAYS):
        seafood_day(runtime, day, range(number * 20, number * 20 + 20))
    return runtime


def export(tmp_path: Path, *args: str, name: str = "bundle.zip") -> Path:
    out = tmp_path / name
    call_command("ledger", "export", *args, "--out", str(out))
    return out


def test_an_export_of_a_day_verifies_with_the_pinned_key_in_an_empty_folder(
    ledger: Runtime, signing_key, tmp_path: Path
) -> None:
    day = DAYS[1]
    bundle = export(
        tmp_path, "--since", day.isoformat(), "--until", (day + timedelta(days=1)).isoformat()
    )

    result = verify_alone(bundle, "--key", signing_key.fingerprint)

    latest = Checkpoint.objects.order_by("-size")[0]
    in_day = Entry.objects.filter(at__gte=day, at__lt=day + timedelta(days=1))
    first, last = in_day.order_by("index")[0], in_day.order_by("-index")[0]
    count = last.index - first.index + 1
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"OK: {count} entries, tree size {latest.size}, root ")
    assert result.stdout.strip().endswith(f"signed by {signing_key.fingerprint}")
    with zipfile.ZipFile(bundle) as opened:
        manifest = json.loads(opened.read("manifest.json"))
        assert opened.read("verify.py") == Path("tracing/ledger/verify.py").read_bytes()
        assert opened.read("entries.jsonl").count(b"\n") == count
    assert manifest["exported_by"].endswith("(manage.py ledger export)")
    journaled = JournalEntry.objects.get(action="ledger.export")
    assert journaled.details["begin"] == first.index and journaled.details["end"] == last.index + 1
    assert journaled.details["bytes"] == bundle.stat().st_size


def test_an_export_from_an_earlier_checkpoint_proves_the_log_grew_from_it(
    ledger: Runtime, signing_key, tmp_path: Path
) -> None:
    earlier = export(tmp_path, "--until", DAYS[1].isoformat(), name="march.zip")
    kept = tmp_path / "kept-checkpoint.txt"
    with zipfile.ZipFile(earlier) as opened:
        kept.write_bytes(opened.read("checkpoint.txt"))
    seafood_day(ledger, TODAY, range(100, 110))

    later = export(tmp_path, "--since", DAYS[2].isoformat(), "--from-checkpoint", str(kept))
    result = verify_alone(later, "--key", signing_key.fingerprint, "--prior", str(kept))

    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(later) as opened:
        assert opened.read("prior/checkpoint.txt") == kept.read_bytes()
        assert (
            json.loads(opened.read("consistency.json"))["prior"]["from"]
            < json.loads(opened.read("consistency.json"))["prior"]["to"]
        )


def test_a_checkpoint_not_of_this_ledger_is_refused(ledger: Runtime, tmp_path: Path) -> None:
    from tracing.ledger.note import checkpoint_body, signing_key_generate

    stranger = signing_key_generate("elsewhere.test/tideline/00")
    forged = tmp_path / "forged.txt"
    forged.write_text(stranger.sign(checkpoint_body(stranger.name, 3, b"\0" * 32, TODAY).text()))

    with pytest.raises(CommandError, match="not one of this ledger's"):
        export(tmp_path, "--from-checkpoint", str(forged))
    assert not (tmp_path / "bundle.zip").exists()
    assert not ExportJob.objects.exists()


def test_a_checkpoint_of_another_history_is_refused(
    ledger: Runtime, signing_key, tmp_path: Path
) -> None:
    from tracing.ledger.note import checkpoint_body

    rewritten = tmp_path / "rewritten.txt"
    rewritten.write_text(
        signing_key.sign(checkpoint_body(signing_key.name, 5, b"\1" * 32, TODAY).text())
    )

    with pytest.raises(CommandError, match="inconsistent with this ledger"):
        export(tmp_path, "--from-checkpoint", str(rewritten))


def test_one_byte_changed_in_an_entry_of_the_zip_is_named(
    ledger: Runtime, signing_key, tmp_path: Path
) -> None:
    bundle = export(tmp_path, "--since", DAYS[1].isoformat(), "--until", DAYS[2].isoformat())
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "entries.jsonl":
                content = content.replace(b'"WMS"', b'"WMX"', 1)
            target.writestr(item, content)

    result = verify_alone(damaged, "--key", signing_key.fingerprint)

    assert result.returncode == 1
    assert result.stdout.startswith("FAIL: entries.jsonl lines "), result.stdout


def test_the_summary_highlights_a_system_and_escapes_what_it_shows(
    ledger: Runtime, tmp_path: Path
) -> None:
    bundle = export(tmp_path, "--system", "QMS", "--correlation-id", "<script>ORD")
    with zipfile.ZipFile(bundle) as opened:
        summary = opened.read("summary.html").decode()
        lines = opened.read("entries.jsonl").count(b"\n")
    assert "&lt;script&gt;ORD" in summary and "<script>" not in summary
    assert f"0 of the {lines} entries match" in summary
    assert lines == Checkpoint.objects.order_by("-size")[0].size


@pytest.mark.parametrize("role", [Role.SUPPORT, Role.OPERATOR])
def test_support_and_operators_may_not_export(ledger: Runtime, make_user, role: Role) -> None:
    with pytest.raises(ExportForbidden):
        ledger_export_request(user=make_user(role), filters=ExportFilters(), now=timezone.now())
    assert not ExportJob.objects.exists()


def test_a_job_whose_requester_lost_the_auditor_role_writes_nothing(
    ledger: Runtime, make_user, settings, tmp_path: Path
) -> None:
    settings.TIDELINE_EXPORT_DIR = tmp_path / "exports"
    auditor = make_user(Role.AUDITOR)
    job = ledger_export_request(user=auditor, filters=ExportFilters(), now=timezone.now())
    auditor.groups.clear()
    auditor = type(auditor).objects.get(pk=auditor.pk)

    done = ledger_export_run(job_id=job.pk, now=timezone.now())

    assert done is not None and done.state == "failed" and "no longer allows" in done.error
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


def test_verify_py_reads_a_public_key_whose_base64_holds_a_plus() -> None:
    import importlib.util

    from tracing.ledger.note import SigningKey

    spec = importlib.util.spec_from_file_location("verify_py", "tracing/ledger/verify.py")
    assert spec and spec.loader
    verify_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify_py)
    seed = 0
    while (
        "+"
        not in (
            key := SigningKey("ledger.test/tideline/1", seed.to_bytes(32, "big"))
        ).verifier_key.split("+", 2)[2]
    ):
        seed += 1

    assert verify_py.VerifierKey(key.verifier_key, "public-key.txt").fingerprint == key.fingerprint
