"""What replay tests send and ask: dead letters through the ingest API, replays through the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from replay.models import Destination
from tests.replay.conftest import Receiver
from tracing.ingest.models import DeadLetter

NOW = datetime.now(UTC).replace(microsecond=0)


def dead_letter(sender: httpx.Client, url: str, **fields: Any) -> DeadLetter:
    letter = {
        "message_id": f"msg-{time.monotonic_ns()}", "correlation_id": "4711", "system": "QMS",
        "transport": "http", "url": url, "headers": {"content-type": "application/json", "x-source": "mes"},
        "payload": '{"order": "4711", "certificate": "C-1"}', "content_type": "application/json",
        "error": "HTTP 503 from QMS", "attempts": 5, "last_failed_at": (NOW - timedelta(minutes=5)).isoformat(),
        **fields,
    }  # fmt: skip
    response = sender.post("/ingest/v1/dead-letters", json=letter)
    assert response.status_code == 200, response.text
    return DeadLetter.objects.get(message_id=letter["message_id"])


def deduplicating(receiver: Receiver, **promises: Any) -> None:
    Destination.objects.create(address_prefix=receiver.url, deduplicates=True, **promises)


def replay(client: httpx.Client, letter: DeadLetter, **fields: Any) -> httpx.Response:
    return client.post(
        f"/api/v1/dead-letters/{letter.id}/replay", json={"version": letter.version, **fields}
    )


def job_when_done(client: httpx.Client, job_id: str, seconds: float = 90) -> dict[str, Any]:
    wait_until(
        lambda: client.get(f"/api/v1/bulk-replays/{job_id}").json()["state"] == "done", seconds
    )
    return client.get(f"/api/v1/bulk-replays/{job_id}").json()


def wait_until(condition: Callable[[], bool], seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("the condition did not hold in time")
