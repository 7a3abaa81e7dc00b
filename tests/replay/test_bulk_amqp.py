"""A bulk replay of AMQP dead letters through a real Celery worker and RabbitMQ: each group
is published together and its confirms awaited together, and each message's outcome is still
its own."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from kombu import Connection, Queue

from replay.models import Destination, ReplayAttempt
from replay.services import SEND_GROUP
from replay.transports import destination_address
from tests.conftest import require_service
from tests.replay.world import job_when_done, wait_until
from tracing.ingest.models import DeadLetter

AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
LETTERS = 2 * SEND_GROUP + 5  # three groups; the unroutable one in the middle of the second


class SlowAnswers:
    """A TCP relay to RabbitMQ that passes everything, but RabbitMQ's answers (its confirms
    among them) each arrive `delay` seconds late: a group of replays then spends most of its
    time waiting for its confirms, where a kill is meant to land."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            broker = socket.create_connection(self.upstream)
            self.sockets += [client, broker]
            threading.Thread(target=self._pass, args=(client, broker), daemon=True).start()
            late: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._hold, args=(broker, late), daemon=True).start()
            threading.Thread(target=self._release, args=(late, client), daemon=True).start()

    def _pass(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)

    def _hold(self, source: socket.socket, late: queue.Queue[tuple[float, bytes]]) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                late.put((time.monotonic() + self.delay, chunk))
        late.put((0.0, b""))

    def _release(self, late: queue.Queue[tuple[float, bytes]], sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, chunk = late.get()
                if not chunk:
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                sink.sendall(chunk)

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def slow_answers() -> Iterator[str]:
    """The broker URL of a SlowAnswers relay to the test's RabbitMQ."""
    rabbitmq = urlsplit(AMQP_URL)
    relay = SlowAnswers((rabbitmq.hostname or "127.0.0.1", rabbitmq.port or 5672), delay=0.5)
    userinfo = rabbitmq.netloc.rpartition("@")[0]
    try:
        yield rabbitmq._replace(netloc=f"{userinfo}@127.0.0.1:{relay.port}").geturl()
    finally:
        relay.close()


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """The broker the worker publishes to: RabbitMQ itself, or through a SlowAnswers relay
    for a test parametrized indirectly with "slow answers"."""
    if getattr(request, "param", None) == "slow answers":
        return str(request.getfixturevalue("slow_answers"))
    return AMQP_URL


@pytest.fixture
def orders_queue(
    settings: Any, monkeypatch: pytest.MonkeyPatch, broker_url: str
) -> Iterator[tuple[str, Any]]:
    """A queue the ERP's orders died in, allowed and deduplicating; the worker publishes to
    `broker_url`, the test looks into the queue directly."""
    name = f"tideline-test-bulk-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TIDELINE_REPLAY_AMQP_URL", broker_url)
    settings.TIDELINE_REPLAY_AMQP_URL = broker_url
    prefix = destination_address("amqp", {"queue": f"{name}."}, broker_url)
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
    arrived = _drained(channel, f"{name}.orders")
    delivered = ReplayAttempt.objects.filter(bulk_id=job["id"], state="delivered")
    assert arrived == Counter(delivered.values_list("idempotency_key", flat=True)), "each once"
    assert len(arrived) == LETTERS - 1
    refused = ReplayAttempt.objects.get(bulk_id=job["id"], state="failed")
    assert refused.dead_letter_id == letters[gone_at].id
    assert f"refused it (queue {name}.gone): NO_ROUTE (312)" in refused.outcome
    states = Counter(DeadLetter.objects.filter(system="ERP").values_list("state", flat=True))
    assert states == {"replayed": LETTERS - 1, "new": 1}


@pytest.mark.rabbitmq
@pytest.mark.parametrize("broker_url", ["slow answers"], indirect=True)
def test_a_worker_killed_while_its_groups_await_their_confirms_sends_nothing_twice(
    sender: httpx.Client,
    operators: list[httpx.Client],
    worker: Callable[[], Any],
    orders_queue: tuple[str, Any],
) -> None:
    """Killed mid-job (its groups mostly waiting for confirms) and restarted: each message
    reaches the queue at most once, the job finishes, the counts add up, and in doubt are only
    messages whose send had begun: at most the group each pool process was publishing."""
    name, channel = orders_queue
    letters = 8 * SEND_GROUP
    for n in range(letters):
        amqp_dead_letter(sender, f"{name}.orders", n)
    first = worker()
    response = operators[0].post("/api/v1/bulk-replays", json={"system": "ERP"})
    assert response.status_code == 201, response.text
    wait_until(lambda: _waiting(channel, f"{name}.orders") >= SEND_GROUP, 60)
    for process in [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    worker()
    job = job_when_done(operators[0], response.json()["id"], seconds=150)

    counts = job["counts"]
    arrived = _drained(channel, f"{name}.orders")
    assert max(arrived.values()) == 1, "no message reached the queue twice"
    assert (counts["taken"], counts["failed"]) == (letters, 0), counts
    assert counts["sent"] + counts["in_doubt"] == letters, counts
    attempts = ReplayAttempt.objects.filter(bulk_id=job["id"])
    delivered = set(attempts.filter(state="delivered").values_list("idempotency_key", flat=True))
    assert delivered <= set(arrived), "every delivered one arrived"
    assert len(arrived) <= counts["sent"] + counts["in_doubt"]
    in_doubt = attempts.filter(state="in_doubt")
    assert not in_doubt.filter(sent_at__isnull=True).exists(), "only a begun send is in doubt"
    assert in_doubt.count() <= 2 * SEND_GROUP, counts  # two pool processes, a group each


def _waiting(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


def _drained(channel: Any, queue: str) -> Counter[str]:
    """The queue's messages by idempotency key, taken out of it."""
    arrived: Counter[str] = Counter()
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        assert "x-death" not in message.headers
        arrived[message.headers["Idempotency-Key"]] += 1
    return arrived
