"""The sequencer as its Celery task and the bench run it, in a batch transaction of its own:
records' entries are then built on a second connection in the batch's snapshot while the
first stores the chunk before. Committed data here (test_sequencer.py runs inside the
test's transaction, where everything is built on the one connection)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from console.services import journal_append
from tests.tracing.ledger.test_merkle import mth
from tests.tracing.ledger.test_sequencer import a_record
from tracing.ledger import entries_beside
from tracing.ledger.entries import PENDING_SQL
from tracing.ledger.models import Entry, PendingEntry
from tracing.ledger.selectors import root_at
from tracing.ledger.services import ledger_sequence

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(entries_beside, "CHUNK", 3)


def records_ingested(client: Client, first: int, count: int) -> None:
    body = json.dumps([a_record(f"r-{number}") for number in range(first, first + count)])
    response = client.post("/ingest/v1/records", body, content_type="application/json")
    assert response.status_code == 200, response.content


def built_on_one_connection() -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute(PENDING_SQL, [1000])
        pending = cursor.fetchall()
        chunks = entries_beside.entry_chunks(cursor, pending, beside=False, meanwhile=lambda: None)
        return [entry.body for chunk in chunks for entry in chunk]


def test_entries_built_beside_are_those_of_one_connection_in_queue_order(
    runtime: Client,
) -> None:
    journal_append(actor="dana", action="login", subject="user:dana")
    records_ingested(runtime, 0, 7)
    journal_append(actor="dana", action="logout", subject="user:dana")
    records_ingested(runtime, 7, 4)
    expected = built_on_one_connection()
    assert len(expected) == 14  # the ingest token's creation is journaled too

    assert not connection.in_atomic_block  # each batch a transaction of its own
    assert ledger_sequence(now=timezone.now(), batch=5).entries == 14

    stored = list(Entry.objects.order_by("index"))
    assert [bytes(entry.body) for entry in stored] == expected
    assert [entry.index for entry in stored] == list(range(14))
    kinds = [entry.kind for entry in stored]
    assert kinds == ["journal", "journal", *["record"] * 7, "journal", *["record"] * 4]
    leaves = [bytes(entry.leaf_hash) for entry in stored]
    assert all(root_at(size) == mth(leaves[:size]) for size in (1, 5, 8, 14))
    assert not PendingEntry.objects.exists()
