"""`ledger verify` reads the log a chunk (an aligned subtree) at a time and recomputes it
level by level; where a chunk disagrees it goes entry by entry to name what changed. Eight
entries to a chunk here, so that 45 entries make six chunks and checkpoints fall inside them.
Also the daily, incremental path: from the last checkpoint a run verified."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from console.services import journal_append
from tests.tracing.ledger.test_tamper import as_superuser
from tracing.ledger import merkle, verification
from tracing.ledger.models import Checkpoint, Entry, VerificationRun
from tracing.ledger.selectors import tree_size
from tracing.ledger.services import ledger_checkpoint, ledger_sequence

pytestmark = pytest.mark.django_db
CHECKPOINTS = (5, 16, 30, 45)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(verification, "CHUNK", 8)


def grow(to: int) -> None:
    for number in range(tree_size(), to):
        journal_append(actor="test", action="login", subject=f"user:{number}")
    ledger_sequence(now=timezone.now())
    ledger_checkpoint(now=timezone.now())


@pytest.fixture
def log() -> None:
    for size in CHECKPOINTS:
        grow(size)


def verify(*arguments: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", "verify", *arguments, stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), err.getvalue()
    return 0, out.getvalue()


def test_every_checkpoint_holds_also_those_inside_a_chunk(log) -> None:
    code, output = verify("--full")
    assert code == 0 and output.startswith("OK: entries 0..45 recomputed, 4 checkpoint(s) hold")
    assert list(Checkpoint.objects.values_list("size", flat=True)) == list(CHECKPOINTS)


def test_a_rewritten_subtree_row_is_named(log) -> None:
    as_superuser("UPDATE ledger_node SET hash = sha256(hash) WHERE level = 2 AND index = 3")
    code, output = verify("--full")
    assert code == 1 and output.startswith("FAILED: entry 12..15: the entries no longer give")


def test_a_changed_entry_with_its_leaf_hash_rewritten_is_named_in_a_later_chunk(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 20",
        "UPDATE ledger_entry SET leaf_hash = sha256('\\x00'::bytea || body) WHERE index = 20",
    )
    code, output = verify("--full")
    assert code == 1 and output.startswith("FAILED: entry 20..21: the entries no longer give")


def test_a_rebuilt_tree_contradicts_a_checkpoint_inside_the_first_chunk(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 2",
        "UPDATE ledger_entry SET leaf_hash = sha256('\\x00'::bytea || body)",
        "DELETE FROM ledger_node",
    )
    compact, nodes = merkle.CompactRange(), []
    for entry in Entry.objects.order_by("index"):
        nodes.extend(compact.append(bytes(entry.leaf_hash)))
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO ledger_node (level, index, hash) VALUES (%s, %s, %s)", nodes
        )
    first = Checkpoint.objects.get(size=5)
    code, output = verify("--full")
    assert code == 1
    assert output.startswith(f"FAILED: checkpoint {first.pk} (size 5): the entries give another")


def test_a_missing_entry_is_named(log) -> None:
    as_superuser("DELETE FROM ledger_entry WHERE index = 33")
    assert verify("--full") == (1, "FAILED: entry 33 is missing (the next entry is 34)\n")


def test_the_daily_run_starts_at_the_last_verified_checkpoint(log) -> None:
    assert verify()[0] == 0  # the first run has nothing to start from: everything
    grow(52)
    code, output = verify()
    # The starting checkpoint holds again (its stored edge gives its root), then the new one.
    assert code == 0 and output.startswith("OK: entries 45..52 recomputed, 2 checkpoint(s) hold")
    run = VerificationRun.objects.latest("id")
    assert (run.from_size, run.verified_size, run.entries) == (45, 52, 7)
    assert run.verified_checkpoint == Checkpoint.objects.get(size=52)


def test_the_daily_run_does_not_reread_what_an_earlier_run_verified(log) -> None:
    assert verify()[0] == 0
    as_superuser("DELETE FROM ledger_entry WHERE index = 33")
    grow(46)  # the sequencer appends after the gap: the daily run starts at 45
    assert verify()[0] == 0
    assert verify("--full")[0] == 1  # the full run, by hand or after a doubt, finds it


def test_the_daily_run_refuses_a_tree_changed_under_its_starting_checkpoint(log) -> None:
    assert verify()[0] == 0
    as_superuser("UPDATE ledger_node SET hash = sha256(hash) WHERE level = 5 AND index = 0")
    grow(50)
    last = Checkpoint.objects.get(size=45)
    code, output = verify()
    assert code == 1 and output == (
        f"FAILED: checkpoint {last.pk} (size 45): the stored subtrees no longer give the root "
        "an earlier verification saw (the tree was changed under it)\n"
    )
