"""The journal records what people did, and refuses to be rewritten."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from console.access import Role
from console.models import JournalEntry
from console.services import journal_append
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_sign_in_and_a_token_creation_are_journaled(client, make_user) -> None:
    make_user(Role.SUPPORT)
    client.post("/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="10.1.2.3")
    client.post("/account/api-tokens/", {"name": "laptop"})
    entries = list(
        JournalEntry.objects.filter(actor="alice")
        .order_by("id")
        .values_list("action", "subject", "remote_addr")
    )
    assert entries[0] == ("login", "user:alice", "10.1.2.3")
    assert entries[1][0] == "api_token.create"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE console_journalentry SET action = 'nothing happened'",
        "DELETE FROM console_journalentry",
        "TRUNCATE console_journalentry",
    ],
)
def test_raw_sql_cannot_change_the_journal(statement: str) -> None:
    journal_append(actor="test", action="replay.request", subject="dead_letter:1")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert JournalEntry.objects.get().action == "replay.request"


def test_the_orm_cannot_change_the_journal() -> None:
    entry = journal_append(actor="test", action="replay.request", subject="dead_letter:1")
    entry.action = "nothing happened"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entry.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        JournalEntry.objects.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        JournalEntry.objects.update(action="nothing happened")
    assert JournalEntry.objects.get().action == "replay.request"
