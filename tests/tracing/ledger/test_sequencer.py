"""Everything stored is queued in its own transaction and sequenced into the tree."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from console.services import journal_append
from tests.tracing.ledger.test_merkle import mth
from tracing.ledger import merkle
from tracing.ledger.canonical import canonical, rfc3339
from tracing.ledger.models import Entry, Node, PendingEntry
from tracing.ledger.selectors import root_at
from tracing.ledger.services import ledger_sequence

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(microsecond=0)


def a_record(record_id: str, **fields):
    return {
        "record_id": record_id, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
        "system": "WMS", "step": "stock.reserve", "event": "delivered",
        "message_id": f"msg-{record_id}", "correlation_id": "4711",
        "business_keys": {"order": "4711", "customer": "Ola Nordmann"},
        "payload": '{"order": 4711, "customer": "Ola Nordmann"}',
        "content_type": "application/json", "headers": {"x-source": "erp"}, **fields,
    }  # fmt: skip


def entries() -> list[dict]:
    return [json.loads(bytes(entry.body)) for entry in Entry.objects.order_by("index")]


def test_a_journaled_action_becomes_an_entry_without_its_details() -> None:
    journal_append(
        actor="dana", action="user.create", subject="user:erik", details={"email": "erik@x.no"}
    )
    assert PendingEntry.objects.count() == 1
    assert ledger_sequence(now=timezone.now()).entries == 1
    entry = entries()[-1]
    assert entry["kind"] == "journal" and entry["actor"] == "dana"
    assert entry["action"] == "user.create" and entry["digests"]["details"].startswith("sha256:")
    assert "erik@x.no" not in bytes(Entry.objects.get(index=0).body).decode()
    assert not PendingEntry.objects.exists()


def test_records_are_logged_with_digests_and_never_their_content(runtime: Client) -> None:
    body = json.dumps([a_record("r-1"), a_record("r-2", event="failed", error="HTTP 503")])
    assert (
        runtime.post("/ingest/v1/records", body, content_type="application/json").status_code == 200
    )
    ledger_sequence(now=timezone.now())
    records = [entry for entry in entries() if entry["kind"] == "record"]
    assert [r["record_id"] for r in records] == ["r-1", "r-2"]
    first = records[0]
    assert first["actor"] == "runtime-prod" and first["system"] == "WMS"
    assert first["correlation_id"] == "4711" and first["action"] == "delivered"
    assert first["digests"]["raw_body"] == "sha256:" + hashlib.sha256(body.encode()).hexdigest()
    payload = b'{"order": 4711, "customer": "Ola Nordmann"}'
    assert first["digests"]["payload"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert set(records[1]["digests"]) == {
        "raw_body",
        "payload",
        "business_keys",
        "headers",
        "error",
    }
    stored = b"".join(bytes(entry.body) for entry in Entry.objects.all())
    assert b"Nordmann" not in stored and b"HTTP 503" not in stored
    assert Entry.objects.filter(kind="record", system="WMS", correlation_id="4711").count() == 2


def test_every_death_of_a_dead_letter_is_an_entry(runtime: Client) -> None:
    letter = {
        "message_id": "msg-cert-4711", "correlation_id": "4711", "system": "QMS",
        "transport": "http", "url": "http://qms.internal/certificates", "payload": "<c/>",
        "error": "HTTP 503 from QMS", "last_failed_at": NOW.isoformat(),
    }  # fmt: skip
    post = lambda body: runtime.post(  # noqa: E731
        "/ingest/v1/dead-letters", json.dumps(body), content_type="application/json"
    )
    post(letter)
    post(letter)  # the same death again: nothing new
    post({**letter, "last_failed_at": (NOW + timedelta(hours=1)).isoformat()})
    ledger_sequence(now=timezone.now())
    deaths = [entry for entry in entries() if entry["kind"] == "dead_letter"]
    assert [(d["death"], d["at"][:19]) for d in deaths] == [
        (1, NOW.strftime("%Y-%m-%dT%H:%M:%S")),
        (2, (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")),
    ]
    assert deaths[0]["action"] == "dead_lettered" and "HTTP 503" not in json.dumps(deaths)


def test_batches_build_the_tree_the_rfc_defines() -> None:
    for number in range(70):
        journal_append(actor="test", action="login", subject=f"user:{number}")
    ledger_sequence(now=timezone.now(), batch=9)
    leaves = [bytes(entry.leaf_hash) for entry in Entry.objects.order_by("index")]
    assert len(leaves) == 70 and list(
        Entry.objects.values_list("index", flat=True).order_by("index")
    ) == list(range(70))
    assert all(merkle.leaf_hash(bytes(e.body)) == bytes(e.leaf_hash) for e in Entry.objects.all())
    for size in (1, 2, 9, 10, 64, 70):
        assert root_at(size) == mth(leaves[:size])
    for node in Node.objects.all():
        assert bytes(node.hash) == mth(
            leaves[node.index << node.level : (node.index + 1) << node.level]
        )
    assert Node.objects.count() == 35 + 17 + 8 + 4 + 2 + 1


def test_what_the_sequencer_stores_is_exactly_canonical_with_its_times_in_utc(
    runtime: Client,
) -> None:
    """The sequencer formats times in SQL and encodes with its fast path: the bytes must be
    what canonical() gives, and the entry's time column what the entry says."""
    utc = NOW.replace(microsecond=123456) - timedelta(minutes=5)
    oslo = utc.astimezone(timezone.get_fixed_timezone(120))
    tricky = 'Ørsted "AS"\\ \n\t\x01 \u2028 \U0001f41f'
    body = json.dumps([a_record("r-1", occurred_at=oslo.isoformat(), step=tricky),
                       a_record("r-2", error="HTTP 503")])  # fmt: skip
    response = runtime.post("/ingest/v1/records", body, content_type="application/json")
    assert response.status_code == 200, response.content
    journal_append(actor="dana", action="login", subject=tricky)
    ledger_sequence(now=timezone.now())
    stored = list(Entry.objects.order_by("index"))
    assert [entry.kind for entry in stored] == ["journal", "record", "record", "journal"]
    for entry in stored:
        content = json.loads(bytes(entry.body))
        assert bytes(entry.body) == canonical(content)
        assert content["at"] == rfc3339(entry.at)
    assert json.loads(bytes(stored[1].body))["at"] == utc.strftime("%Y-%m-%dT%H:%M:%S.123456Z")
    assert json.loads(bytes(stored[1].body))["step"] == tricky


def test_records_built_by_postgresql_are_canonical_with_any_character(runtime: Client) -> None:
    """PostgreSQL writes a record's entry: every character a text column can hold, in every
    text the entry carries, must come out as canonical() writes it, and say what was sent."""
    specials = "".join(chr(c) for c in (*range(1, 0x20), 0x22, 0x2F, 0x5C, 0x7F, 0x80, 0x9F,
                                        0xA0, 0xE9, 0x2028, 0x2029, 0xD7FF, 0xE000, 0xFEFF,
                                        0xFFFD, 0xFFFF, 0x1F41F, 0x10FFFF))  # fmt: skip
    texts = ("system", "step", "message_id", "correlation_id")
    sent = [
        a_record(f"r-{n}{specials[n::7]}", **{field: f"{field}{specials[n::3]}" for field in texts})
        for n in range(5)
    ]
    sent.append(a_record("r-bare", payload=None, event="failed", error="x", message_id=None))
    response = runtime.post("/ingest/v1/records", json.dumps(sent), content_type="application/json")
    assert response.status_code == 200, response.content
    ledger_sequence(now=timezone.now())
    stored = [e for e in Entry.objects.order_by("index") if e.kind == "record"]
    assert len(stored) == len(sent)
    for entry, record in zip(stored, sent, strict=True):
        content = json.loads(bytes(entry.body))
        assert bytes(entry.body) == canonical(content)
        assert content["record_id"] == record["record_id"]
        assert content["action"] == record["event"]
        assert all(content[field] == record[field] for field in texts)
        assert (entry.system, entry.correlation_id) == (record["system"], record["correlation_id"])
    assert set(json.loads(bytes(stored[-1].body))["digests"]) == {
        "raw_body", "business_keys", "headers", "error",
    }  # fmt: skip
