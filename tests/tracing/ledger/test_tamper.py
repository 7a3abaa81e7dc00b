"""A PostgreSQL superuser switches the triggers off and rewrites the log: `ledger verify`
finds each change and names the entry or checkpoint."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from console.access import Role
from console.services import journal_append
from tracing.ledger import merkle
from tracing.ledger.models import Entry, VerificationRun
from tracing.ledger.note import signing_key_generate
from tracing.ledger.services import ledger_checkpoint, ledger_sequence

pytestmark = pytest.mark.django_db


@pytest.fixture
def log() -> None:
    for half in range(2):
        for number in range(10):
            journal_append(actor="test", action="login", subject=f"user:{half}-{number}")
        ledger_sequence(now=timezone.now())
        ledger_checkpoint(now=timezone.now())


def as_superuser(*statements: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            cursor.execute(statement)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def verify() -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("ledger", "verify", "--full", stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), err.getvalue()
    return 0, out.getvalue()


def test_an_untouched_log_verifies(log) -> None:
    code, output = verify()
    assert code == 0 and output.startswith("OK: entries 0..20 recomputed, 2 checkpoint(s) hold")
    assert VerificationRun.objects.get().ok is True


def test_a_changed_field_is_named(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 7"
    )
    assert verify() == (1, "FAILED: entry 7: its bytes do not match its leaf hash (changed)\n")
    assert VerificationRun.objects.get().ok is False


def test_a_changed_field_with_its_leaf_hash_rewritten_is_named(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 7",
        "UPDATE ledger_entry SET leaf_hash = sha256('\\x00'::bytea || body) WHERE index = 7",
    )
    code, output = verify()
    assert code == 1 and output.startswith("FAILED: entry 6..7: the entries no longer give")


def test_a_deleted_entry_is_named(log) -> None:
    as_superuser("DELETE FROM ledger_entry WHERE index = 12")
    assert verify() == (1, "FAILED: entry 12 is missing (the next entry is 13)\n")


def test_a_deleted_last_entry_contradicts_the_last_checkpoint(log) -> None:
    as_superuser("DELETE FROM ledger_entry WHERE index = 19")
    code, output = verify()
    assert code == 1 and "(size 20): the log holds only 19 entries" in output


def test_an_entry_inserted_in_the_middle_is_named(log) -> None:
    forged = Entry.objects.get(index=4)
    as_superuser(
        "UPDATE ledger_entry SET index = index + 1000000 WHERE index >= 5",
        "UPDATE ledger_entry SET index = index - 999999 WHERE index >= 1000000",
    )
    body = bytes(forged.body).replace(b"login", b"logout")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_entry (index, body, leaf_hash, kind, source_id, at, sequenced_at) "
            "VALUES (5, %s, %s, 'journal', 999, now(), now())",
            [body, merkle.leaf_hash(body)],
        )
    code, output = verify()
    assert code == 1 and output.startswith("FAILED: entry 4..5: the entries no longer give")


def test_two_swapped_entries_are_named(log) -> None:
    as_superuser(
        "UPDATE ledger_entry SET index = -1 WHERE index = 3",
        "UPDATE ledger_entry SET index = 3 WHERE index = 9",
        "UPDATE ledger_entry SET index = 9 WHERE index = -1",
    )
    code, output = verify()
    assert code == 1 and output.startswith("FAILED: entry 2..3: the entries no longer give")


def test_a_rebuilt_tree_re_signed_with_another_key_is_refused(log, settings) -> None:
    as_superuser(
        "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), 'login', 'logout'), 'UTF8') WHERE index = 7",
        "UPDATE ledger_entry SET leaf_hash = sha256('\\x00'::bytea || body)",
        "DELETE FROM ledger_node",
        "DELETE FROM ledger_checkpoint",
    )
    compact = merkle.CompactRange()
    nodes = []
    for entry in Entry.objects.order_by("index"):
        nodes.extend(compact.append(bytes(entry.leaf_hash)))
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO ledger_node (level, index, hash) VALUES (%s, %s, %s)", nodes
        )
    real = settings.TIDELINE_SIGNING_KEY
    forger = signing_key_generate("ledger.test/tideline/0123456789abcdef")
    settings.TIDELINE_SIGNING_KEY = forger.text()
    ledger_checkpoint(now=timezone.now())
    settings.TIDELINE_SIGNING_KEY = real
    code, output = verify()
    assert code == 1
    assert (
        "(size 20): the note carries no signature by ledger.test/tideline/0123456789abcdef"
        in output
    )


def test_a_failed_verification_shows_on_the_dashboard(log, client_as) -> None:
    as_superuser("DELETE FROM ledger_entry WHERE index = 12")
    verify()
    page = client_as(Role.SUPPORT).get("/").content.decode()
    assert "The ledger did not verify" in page and "entry 12 is missing" in page
