"""Audit records: JSON array, JSON Lines and CloudEvents; idempotent; all-or-nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from console.services import ingest_token_create

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def runtime() -> Client:
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def a_record(record_id: str = "r-1", **fields: Any) -> dict[str, Any]:
    return {
        "record_id": record_id, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(), "system": "WMS",
        "step": "stock.reserve", "event": "delivered", "message_id": "msg-4711-1", "correlation_id": "4711",
        "trace_id": "5b8efff798038103d269b633813fc60c", "business_keys": {"order": "4711"},
        "payload": '{"order": 4711, "lines": 3}', "content_type": "application/json",
        "headers": {"x-source": "erp"}, "counts": {"expected": 12000, "processed": 800}, **fields,
    }  # fmt: skip


def stored_rows() -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sender, record_id, system, step, event, message_id, correlation_id, encode(trace_id, 'hex'), "
            "business_keys::text, convert_from(payload, 'UTF8'), encode(payload_digest, 'hex'), content_type, "
            "headers::text, counts_expected, counts_processed, raw_position FROM ingest_record ORDER BY record_id"
        )
        return cursor.fetchall()


def post(client: Client, body: bytes | str, content_type: str = "application/json") -> Any:
    # CONTENT_TYPE given again: Django's test client drops it when the body is empty.
    return client.post(
        "/ingest/v1/records", body, content_type=content_type, CONTENT_TYPE=content_type
    )


def test_a_json_array_is_stored_with_its_raw_body(runtime: Client) -> None:
    body = json.dumps([a_record("r-1"), a_record("r-2", event="failed", error="HTTP 503 from QMS")])
    response = post(runtime, body)
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 2, "duplicates": 0}
    rows = stored_rows()
    assert rows[0][:8] == (
        "runtime-prod",
        "r-1",
        "WMS",
        "stock.reserve",
        "delivered",
        "msg-4711-1",
        "4711",
        "5b8efff798038103d269b633813fc60c",
    )
    assert rows[0][9] == '{"order": 4711, "lines": 3}'
    assert rows[0][10] == hashlib.sha256(b'{"order": 4711, "lines": 3}').hexdigest()
    assert rows[0][13:] == (12000, 800, 0) and rows[1][15] == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT body, content_type FROM ingest_rawbody")
        raw, content_type = cursor.fetchone()
        assert bytes(raw) == body.encode() and content_type == "application/json"
        cursor.execute("SELECT count(*) FROM ingest_flowtouch WHERE correlation_id = '4711'")
        assert cursor.fetchone()[0] >= 1


def test_the_same_record_twice_is_stored_once(runtime: Client) -> None:
    body = json.dumps([a_record("r-1"), a_record("r-1")])
    assert post(runtime, body).json() == {"accepted": 1, "duplicates": 1}
    assert post(runtime, json.dumps([a_record("r-1"), a_record("r-2")])).json() == {
        "accepted": 1,
        "duplicates": 1,
    }
    assert len(stored_rows()) == 2


def test_the_same_record_id_with_other_content_is_a_conflict(runtime: Client) -> None:
    post(runtime, json.dumps([a_record("r-1")]))
    response = post(runtime, json.dumps([a_record("r-9"), a_record("r-1", step="stock.release")]))
    assert response.status_code == 409
    assert response.json()["record_ids"] == ["r-1"]
    assert "Nothing of this batch was stored" in response.json()["detail"]
    assert [row[1] for row in stored_rows()] == ["r-1"]


def test_cloudevents_and_json_lines_give_the_same_rows_as_the_array(runtime: Client) -> None:
    records = [a_record("r-1"), a_record("r-2", event="failed")]
    post(runtime, json.dumps(records))
    from_array = stored_rows()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingest_record; DELETE FROM ingest_recordkey")

    post(
        runtime, "\n".join(json.dumps(record) for record in records) + "\n", "application/x-ndjson"
    )
    assert [row[:15] for row in stored_rows()] == [row[:15] for row in from_array]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingest_record; DELETE FROM ingest_recordkey")

    def cloudevent(record: dict[str, Any]) -> dict[str, Any]:
        data = {
            key: value
            for key, value in record.items()
            if key not in ("record_id", "occurred_at", "event")
        }
        return {"specversion": "1.0", "id": record["record_id"], "time": record["occurred_at"],
                "type": f"com.seafood.message.{record['event']}", "source": "urn:runtime:prod", "data": data}  # fmt: skip

    single = post(runtime, json.dumps(cloudevent(records[0])), "application/cloudevents+json")
    batch = post(
        runtime, json.dumps([cloudevent(records[1])]), "application/cloudevents-batch+json"
    )
    assert single.status_code == 200 and batch.status_code == 200, (single.content, batch.content)
    assert [row[:15] for row in stored_rows()] == [row[:15] for row in from_array]


def test_a_binary_payload_arrives_as_base64(runtime: Client) -> None:
    payload = bytes(range(256))
    record = a_record(
        payload=base64.b64encode(payload).decode(),
        payload_encoding="base64",
        content_type="application/octet-stream",
    )
    assert post(runtime, json.dumps([record])).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM ingest_record")
        assert bytes(cursor.fetchone()[0]) == payload


def test_one_invalid_record_refuses_the_whole_batch_naming_each(runtime: Client) -> None:
    bad = [
        a_record("r-1"),
        {key: value for key, value in a_record("r-2").items() if key != "record_id"},
        a_record("r-3", system=7),
        a_record("r-4", event="shipped"),
        a_record("r-5", payload="not base64!", payload_encoding="base64"),
        a_record("r-6", occurred_at="2026-01-01T10:00:00"),
        a_record("r-7", occurred_at=(NOW - timedelta(days=400)).isoformat()),
        a_record("r-8", trace_id="xyz"),
    ]
    response = post(runtime, json.dumps(bad))
    assert response.status_code == 400
    errors = {(error["index"], error["field"]) for error in response.json()["errors"]}
    assert errors == {
        (1, "record_id"),
        (2, "system"),
        (3, "event"),
        (4, "payload"),
        (5, "occurred_at"),
        (6, "occurred_at"),
        (7, "trace_id"),
    }
    assert stored_rows() == []


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"", "application/json", 400, "The body is empty"),
        (b'[{"record_id": "\xff"}]', "application/json", 400, "not valid UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", 400, "nested too deeply"),
        (b'{"record_id": "r-1"}', "application/json", 400, "must be a JSON array"),
        (b"[1, 2", "application/json", 400, "not valid JSON"),
        (b"<records/>", "application/xml", 415, "is not accepted"),
    ],
)
def test_bad_bodies_are_refused_and_store_nothing(
    runtime: Client, body: bytes, content_type: str, status: int, message: str
) -> None:
    response = post(runtime, body, content_type)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert stored_rows() == []


def test_a_cloudevent_without_specversion_is_refused(runtime: Client) -> None:
    event = {
        "id": "r-1",
        "source": "urn:x",
        "type": "delivered",
        "time": NOW.isoformat(),
        "data": {"system": "WMS", "step": "s"},
    }
    response = post(runtime, json.dumps(event), "application/cloudevents+json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 0, "field": "specversion", "message": 'A CloudEvent needs specversion ("1.0").'}
    ]


def test_a_token_limited_to_systems_refuses_records_of_others() -> None:
    token = ingest_token_create(sender="wms-adapter", systems=["WMS"], actor="test").secret
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = post(client, json.dumps([a_record("r-1"), a_record("r-2", system="FIN")]))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "index": 1,
            "field": "system",
            "message": "This ingest token may not send records for system 'FIN'.",
        }
    ]
    assert stored_rows() == []


def test_records_need_an_ingest_token() -> None:
    response = post(Client(), json.dumps([a_record()]))
    assert response.status_code == 401
    assert response.json()["detail"] == "Missing 'Authorization: Bearer <ingest token>'."


@pytest.mark.parametrize(
    "unstorable",
    [{"step": "stock.reserve\u0000"}, {"counts": {"expected": 2**63, "processed": 1}}],
    ids=["nul-in-text", "count-beyond-bigint"],
)
def test_a_value_postgresql_cannot_store_is_a_400_not_a_retry(
    runtime: Client, unstorable: dict[str, Any]
) -> None:
    response = post(runtime, json.dumps([a_record("r-1", **unstorable)]))
    assert response.status_code == 400
    assert "cannot be stored" in response.json()["detail"]
    assert stored_rows() == []
