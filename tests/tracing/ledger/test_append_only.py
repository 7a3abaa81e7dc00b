"""The log's tables refuse every change but INSERT, through the ORM and raw SQL alike."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from tracing.ledger.models import Checkpoint, Entry, Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored() -> None:
    now = timezone.now()
    Entry.objects.create(
        index=0, body=b"{}", leaf_hash=b"h" * 32, kind="journal", source_id=1, at=now,
        sequenced_at=now,
    )  # fmt: skip
    Node.objects.create(level=1, index=0, hash=b"n" * 32)
    Checkpoint.objects.create(
        size=1, root=b"r" * 32, note="n", key_fingerprint="SHA256:x", created_at=now
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entry SET body = 'x'",
        "DELETE FROM ledger_entry",
        "TRUNCATE ledger_entry",
        "UPDATE ledger_node SET hash = 'x'",
        "DELETE FROM ledger_node",
        "TRUNCATE ledger_node CASCADE",
        "UPDATE ledger_checkpoint SET size = 2",
        "DELETE FROM ledger_checkpoint",
        "TRUNCATE ledger_checkpoint CASCADE",
    ],
)
def test_raw_sql_cannot_change_the_log(stored: None, statement: str) -> None:
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)


def test_the_orm_cannot_change_the_log(stored: None) -> None:
    for model in (Entry, Node, Checkpoint):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            model.objects.update(
                **{"hash" if model is Node else "root": b"x"}
                if model is not Entry
                else {"body": b"x"}
            )
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            model.objects.all().delete()
    entry = Entry.objects.get()
    entry.body = b"changed"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        entry.save()
    assert bytes(Entry.objects.get().body) == b"{}"
