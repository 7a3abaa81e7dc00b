"""The same new dead letter posted by several senders' retries at once: one row, no error."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from console.services import ingest_token_create
from tests.tracing.test_dead_letters import a_dead_letter
from tracing.ingest.models import DeadLetter


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_posts_store_one_dead_letter(live_server: Any) -> None:
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    body = json.dumps(a_dead_letter()).encode()
    answers: list[httpx.Response] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        answers.append(httpx.post(
            f"{live_server.url}/ingest/v1/dead-letters", content=body, timeout=30,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ))  # fmt: skip

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [200] * 8
    assert sum(answer.json()["created"] for answer in answers) == 1
    assert sum(answer.json()["duplicates"] for answer in answers) == 7
    assert DeadLetter.objects.count() == 1
