"""`ledger verify` as the command line and the daily task run it, in a transaction of its own:
the entries then stream on a second connection that shares the first one's snapshot, while
the first reads the stored subtrees. Committed logs here (the other verify tests run inside
the test's transaction, where only one connection can see the log)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from tests.tracing.ledger import test_tamper
from tests.tracing.ledger.test_verify_chunks import CHECKPOINTS, grow, verify
from tracing.ledger import verification
from tracing.ledger.models import Entry

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(verification, "CHUNK", 8)


@pytest.fixture
def log() -> None:
    for size in CHECKPOINTS:
        grow(size)
    assert not connection.in_atomic_block  # verify runs in a transaction of its own


def as_superuser(*statements: str) -> None:
    with transaction.atomic():
        test_tamper.as_superuser(*statements)


def test_a_committed_log_verifies_in_chunks_and_checkpoints(log) -> None:
    code, output = verify("--full")
    assert code == 0 and output.startswith("OK: entries 0..45 recomputed, 4 checkpoint(s) hold")


def test_a_changed_entry_is_named(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 20",
    )
    code, output = verify("--full")
    assert code == 1 and output == (
        "FAILED: entry 20: its bytes do not match its leaf hash (changed)\n"
    )


def test_a_missing_entry_is_named(log) -> None:
    as_superuser("DELETE FROM ledger_entry WHERE index = 33")
    assert verify("--full") == (1, "FAILED: entry 33 is missing (the next entry is 34)\n")


def test_the_daily_run_starts_mid_chunk_and_reads_only_what_is_new(log) -> None:
    assert verify()[0] == 0
    grow(52)
    code, output = verify()
    assert code == 0 and output.startswith("OK: entries 45..52 recomputed, 2 checkpoint(s) hold")
    assert Entry.objects.count() == 52
