"""Dead letters through the API: stored once per message, reopened when a message dies again."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from console.services import ingest_token_create
from tracing.ingest.models import DeadLetter

pytestmark = pytest.mark.django_db
FAILED_AT = datetime(2026, 11, 20, 14, 2, tzinfo=UTC)


@pytest.fixture
def runtime() -> Client:
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")


def a_dead_letter(**fields: Any) -> dict[str, Any]:
    return {
        "message_id": "msg-cert-4711", "correlation_id": "4711", "system": "QMS", "transport": "http",
        "url": "http://qms.internal/certificates", "headers": {"content-type": "application/xml"},
        "payload": "<certificate order='4711'/>", "content_type": "application/xml",
        "error": "HTTP 503 from QMS", "attempts": 5, "first_failed_at": FAILED_AT.isoformat(),
        "last_failed_at": (FAILED_AT + timedelta(minutes=4)).isoformat(), **fields,
    }  # fmt: skip


def post(client: Client, body: Any) -> Any:
    return client.post("/ingest/v1/dead-letters", json.dumps(body), content_type="application/json")


def test_a_dead_letter_is_kept_with_its_destination_and_sender(runtime: Client) -> None:
    response = post(runtime, a_dead_letter())
    assert response.json() == {"created": 1, "reopened": 0, "duplicates": 0}
    letter = DeadLetter.objects.get()
    assert (letter.sender, letter.system, letter.transport, letter.state) == (
        "runtime-prod",
        "QMS",
        "http",
        "new",
    )
    assert letter.destination == {"url": "http://qms.internal/certificates"}
    assert bytes(letter.payload) == b"<certificate order='4711'/>"
    assert (
        letter.history[0]["error"] == "HTTP 503 from QMS" and letter.history[0]["source"] == "api"
    )


def test_the_same_death_twice_is_one_and_a_new_death_reopens(runtime: Client) -> None:
    post(runtime, a_dead_letter())
    assert post(runtime, [a_dead_letter()]).json() == {"created": 0, "reopened": 0, "duplicates": 1}
    DeadLetter.objects.update(state=DeadLetter.State.REPLAYED)
    later = a_dead_letter(
        last_failed_at=(FAILED_AT + timedelta(hours=2)).isoformat(), error="HTTP 500 from QMS"
    )
    assert post(runtime, later).json() == {"created": 0, "reopened": 1, "duplicates": 0}
    letter = DeadLetter.objects.get()
    assert letter.state == "new" and letter.version == 2 and letter.error == "HTTP 500 from QMS"
    assert [death["error"] for death in letter.history] == [
        "HTTP 503 from QMS",
        "HTTP 500 from QMS",
    ]


def test_a_message_without_id_is_keyed_by_its_payload(runtime: Client) -> None:
    letter = a_dead_letter(message_id=None, transport="redis", stream="stock.snapshots", url=None)
    post(runtime, letter)
    post(runtime, letter)
    stored = DeadLetter.objects.get()
    assert stored.message_key.startswith("sha256:") and stored.destination == {
        "stream": "stock.snapshots"
    }


def test_a_binary_payload_is_kept_byte_for_byte(runtime: Client) -> None:
    payload = bytes(range(256)) * 4
    post(
        runtime,
        a_dead_letter(payload=base64.b64encode(payload).decode(), payload_encoding="base64"),
    )
    assert bytes(DeadLetter.objects.get().payload) == payload


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"payload": "%%% not base64", "payload_encoding": "base64"},
            "payload",
            "not valid base64",
        ),
        ({"url": "ftp://qms"}, "url", "needs the url"),
        ({"transport": "amqp", "url": None}, "queue", "needs the queue"),
        ({"transport": "pigeon"}, "transport", "Invalid enum value"),
        ({"attempts": -1}, "attempts", ">= 0"),
    ],
)
def test_an_invalid_dead_letter_is_refused_naming_the_field(
    runtime: Client, fields: dict[str, Any], field: str, message: str
) -> None:
    response = post(runtime, [a_dead_letter(message_id="ok"), a_dead_letter(**fields)])
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["index"] == 1 and error["field"] == field and message in error["message"]
    assert not DeadLetter.objects.exists()


def test_a_value_postgresql_cannot_store_is_a_400_not_a_retry(runtime: Client) -> None:
    response = post(runtime, a_dead_letter(headers={"x-note": "nul \u0000 inside"}))
    assert response.status_code == 400
    assert "cannot be stored" in response.json()["detail"]
    assert not DeadLetter.objects.exists()


def test_a_retried_dead_letter_without_a_failure_time_is_a_duplicate(runtime: Client) -> None:
    letter = a_dead_letter(last_failed_at=None, first_failed_at=None)
    assert post(runtime, letter).json() == {"created": 1, "reopened": 0, "duplicates": 0}
    assert post(runtime, letter).json() == {"created": 0, "reopened": 0, "duplicates": 1}
    assert DeadLetter.objects.get().version == 1
