"""A bulk replay of AMQP dead letters through a real Celery worker and RabbitMQ: each group
is published together and its confirms awaited together, and each message's outcome is still
its own."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from kombu import Connection, Queue

from replay.models import Destination, ReplayAttempt
from replay.services import SEND_GROUP
from replay.transports import destination_address
from tests.conftest import require_service
from tests.replay.world import job_when_done
from tracing.ingest.models import DeadLetter

AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
LETTERS = 2 * SEND_GROUP + 5  # three groups; the unroutable one in the middle of the second


@pytest.fixture
def orders_queue(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A queue the ERP's orders died in, allowed and deduplicating; the worker publishes to
    the test's RabbitMQ."""
    name = f"tideline-test-bulk-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TIDELINE_REPLAY_AMQP_URL", AMQP_URL)
    settings.TIDELINE_REPLAY_AMQP_URL = AMQP_URL
    prefix = destination_address("amqp", {"queue": f"{name}."}, AMQP_URL)
    Destination.objects.create(address_prefix=prefix, deduplicates=True)
    connection = Connection(AMQP_URL, connect_timeout=2)
    try:
        channel = connection.channel()
    except (*connection.connection_errors, OSError):
        connection.release()
        require_service(False, f"RabbitMQ is not reachable at {connection.as_uri()}")
    queue = Queue(f"{name}.orders", durable=False)(channel)
    queue.declare()
    try:
        yield name, channel
    finally:
        queue.delete()
        connection.release()


def amqp_dead_letter(sender: httpx.Client, queue: str, n: int) -> DeadLetter:
    letter = {
        "message_id": f"erp-order-{n}-{time.monotonic_ns()}", "correlation_id": f"7{n:03d}",
        "system": "ERP", "transport": "amqp", "exchange": "erp.orders", "routing_key": "order.created",
        "queue": queue, "headers": {"x-death": [{"queue": queue, "reason": "rejected"}]},
        "payload": f'{{"order": {n}}}', "content_type": "application/json",
        "error": "rejected by the WMS consumer", "attempts": 1,
    }  # fmt: skip
    response = sender.post("/ingest/v1/dead-letters", json=letter)
    assert response.status_code == 200, response.text
    return DeadLetter.objects.get(message_id=letter["message_id"])


@pytest.mark.rabbitmq
def test_a_bulk_job_over_amqp_fails_only_the_message_no_queue_took(
    sender: httpx.Client,
    operators: list[httpx.Client],
    worker: Callable[[], Any],
    orders_queue: tuple[str, Any],
) -> None:
    name, channel = orders_queue
    gone_at = SEND_GROUP + SEND_GROUP // 2
    letters = [
        amqp_dead_letter(sender, f"{name}.gone" if n == gone_at else f"{name}.orders", n)
        for n in range(LETTERS)
    ]
    worker()

    response = operators[0].post("/api/v1/bulk-replays", json={"system": "ERP"})
    assert response.status_code == 201, response.text
    job = job_when_done(operators[0], response.json()["id"])

    counts = job["counts"]
    assert (counts["sent"], counts["failed"], counts["in_doubt"]) == (LETTERS - 1, 1, 0)
    arrived: Counter[str] = Counter()
    while (message := channel.basic_get(f"{name}.orders", no_ack=True)) is not None:
        assert "x-death" not in message.headers
        arrived[message.headers["Idempotency-Key"]] += 1
    delivered = ReplayAttempt.objects.filter(bulk_id=job["id"], state="delivered")
    assert arrived == Counter(delivered.values_list("idempotency_key", flat=True)), "each once"
    assert len(arrived) == LETTERS - 1
    refused = ReplayAttempt.objects.get(bulk_id=job["id"], state="failed")
    assert refused.dead_letter_id == letters[gone_at].id
    assert f"refused it (queue {name}.gone): NO_ROUTE (312)" in refused.outcome
    states = Counter(DeadLetter.objects.filter(system="ERP").values_list("state", flat=True))
    assert states == {"replayed": LETTERS - 1, "new": 1}
