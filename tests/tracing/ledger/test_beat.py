"""A real Celery worker with beat turns journaled actions into entries and a signed,
witnessed checkpoint, with nothing called by hand."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.services import journal_append
from tests.processes import celery_worker, worker_stop
from tests.tracing.ledger.conftest import SIGNING_KEY
from tests.tracing.ledger.test_merkle import mth
from tracing.ledger.models import Checkpoint, Entry, PendingEntry, WitnessPublication
from tracing.ledger.note import checkpoint_body_parse, note_verify, verifier_key_parse

# Beat signs at most every 30 s (console/settings.py); the worker also has to start cold.
CHECKPOINT_WAIT_SECONDS = 120


@pytest.fixture
def celery(transactional_db: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    worker = celery_worker(
        str(tmp_path / "beat-schedule"),
        env={
            "TIDELINE_SIGNING_KEY": SIGNING_KEY.text(),
            "TIDELINE_WITNESS_DIR": str(tmp_path / "witness"),
        },
    )
    yield worker
    worker_stop(worker)


def test_beat_sequences_journal_entries_and_signs_a_checkpoint(
    celery: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    for name in ("erik", "frida", "gunnar"):
        journal_append(actor="dana", action="user.create", subject=f"user:{name}")
    deadline = time.monotonic() + CHECKPOINT_WAIT_SECONDS
    while not Checkpoint.objects.filter(size__gte=3).exists():
        assert celery.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "beat signed no checkpoint of the three actions"
        time.sleep(0.5)
    checkpoint = Checkpoint.objects.get(size__gte=3)
    assert not PendingEntry.objects.exists()
    entries = list(Entry.objects.order_by("index"))
    assert [entry.kind for entry in entries] == ["journal"] * 3
    body = checkpoint_body_parse(
        note_verify(checkpoint.note, verifier_key_parse(SIGNING_KEY.verifier_key))
    )
    assert body.size == 3 and body.root == mth([bytes(entry.leaf_hash) for entry in entries])
    # The same task sends it off the host.
    while not WitnessPublication.objects.filter(status="published").exists():
        assert time.monotonic() < deadline, "the checkpoint was not witnessed"
        time.sleep(0.5)
    [witnessed] = (tmp_path / "witness").iterdir()
    assert witnessed.read_text(encoding="utf-8") == checkpoint.note
