"""`manage.py consume_dead_letters` against a real RabbitMQ.

Each test declares its own exchanges and queues (a uuid in every name) and deletes them.
The orders exchange routes `order.created` to the orders queue, whose dead-letter exchange
routes what dies there into `<name>.dlq`, the queue the command consumes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from tests.conftest import require_service
from tracing.ingest.models import DeadLetter

pytestmark = pytest.mark.rabbitmq
ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BACKLOG = 300


def rabbitmq_reachable(url: str) -> bool:
    probe = Connection(url, connect_timeout=2)
    try:
        probe.connect()
    except (*probe.connection_errors, *probe.channel_errors):
        return False
    finally:
        probe.release()
    return True


RABBITMQ_REACHABLE = rabbitmq_reachable(AMQP_URL)
RABBITMQ_MISSING = (
    f"RabbitMQ is not reachable at {Connection(AMQP_URL).as_uri()} (TIDELINE_TEST_AMQP_URL)"
)
try:
    require_service(RABBITMQ_REACHABLE, RABBITMQ_MISSING)
except pytest.skip.Exception:
    pytest.skip(RABBITMQ_MISSING, allow_module_level=True)  # one line, not one per test
except pytest.fail.Exception:
    pass  # CI: each test fails through the amqp_url fixture while the rest of the suite runs


@pytest.fixture
def amqp_url() -> str:
    require_service(RABBITMQ_REACHABLE, RABBITMQ_MISSING)
    return AMQP_URL


class Broker:
    """A channel for the test, and every exchange and queue it declared, to delete after."""

    def __init__(self, connection_: Connection) -> None:
        self.connection = connection_
        self.channel = connection_.channel()
        self.declared: list[Exchange | Queue] = []

    def orders_declare(self, *, expire_at_once: bool = False) -> str:
        """The orders exchange and queue, dead-lettering into `<name>.dlq`; returns the name."""
        name = f"tideline-test-orders-{uuid.uuid4().hex[:12]}"
        orders = Exchange(name, "direct", durable=False)
        graveyard = Exchange(f"{name}.dlx", "fanout", durable=False)
        arguments: dict[str, Any] = {"x-dead-letter-exchange": graveyard.name}
        if expire_at_once:
            arguments["x-message-ttl"] = 0  # every message dies on arrival: a backlog, fast
        for entity in (
            orders,
            graveyard,
            Queue(f"{name}.dlq", graveyard, durable=False),
            Queue(name, orders, "order.created", durable=False, queue_arguments=arguments),
        ):
            bound = entity(self.channel)
            bound.declare()
            self.declared.append(bound)
        return name

    def publish(self, name: str, body: bytes, **properties: Any) -> None:
        Producer(self.channel).publish(
            body, exchange=name, routing_key="order.created",
            content_type="application/octet-stream", content_encoding="binary", **properties,
        )  # fmt: skip

    def waiting(self, queue: str) -> int:
        """Messages ready in `queue` (a closed consumer's unacked ones are back among them)."""
        return int(self.channel.queue_declare(queue=queue, passive=True).message_count)

    def wait_for(self, queue: str, count: int) -> None:
        # Dead-lettering is asynchronous: the message reaches the DLQ a moment later.
        until(lambda: self.waiting(queue) == count, f"{count} messages in {queue}")

    def delete_declared(self) -> None:
        for entity in reversed(self.declared):
            entity.delete()


@pytest.fixture
def broker(amqp_url: str) -> Iterator[Broker]:
    with Connection(amqp_url) as connection_:
        broker = Broker(connection_)
        try:
            yield broker
        finally:
            broker.delete_declared()


def until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.01)


def consumer_rejects(broker: Broker, queue: str, count: int = 1) -> None:
    """What a consumer that cannot handle messages does: reject them, without requeue."""
    rejected: list[Message] = []

    def reject(message: Message) -> None:
        message.reject(requeue=False)
        rejected.append(message)

    with Consumer(broker.channel, queues=[Queue(queue, no_declare=True)], on_message=reject):
        while len(rejected) < count:
            broker.connection.drain_events(timeout=5)


def test_a_rejected_message_becomes_a_dead_letter_with_its_x_death_facts(
    transactional_db: Any, broker: Broker, amqp_url: str
) -> None:
    orders = broker.orders_declare()
    payload = b"\x00\xff<order id='4711'/>\r\n" + bytes(range(256))
    broker.publish(
        orders, payload, message_id="msg-order-4711", correlation_id="4711",
        headers={"x-system": "ERP", "business.order": "4711"}, priority=7, type="order.created",
    )  # fmt: skip
    consumer_rejects(broker, orders)
    broker.wait_for(f"{orders}.dlq", 1)

    call_command(
        "consume_dead_letters", "--amqp-url", amqp_url, "--queue", f"{orders}.dlq",
        "--idle-exit", "2",
    )  # fmt: skip

    letter = DeadLetter.objects.get()
    assert (letter.sender, letter.system, letter.transport) == ("rabbitmq", "ERP", "amqp")
    assert (letter.message_id, letter.correlation_id) == ("msg-order-4711", "4711")
    assert letter.destination == {
        "exchange": orders,
        "routing_key": "order.created",
        "queue": orders,
    }
    assert letter.error == f"rejected by a consumer of {orders} (queue {orders})"
    assert letter.attempts == 1
    assert timezone.now() - timedelta(minutes=1) < letter.last_failed_at <= timezone.now()
    assert bytes(letter.payload) == payload
    assert letter.content_type == "application/octet-stream"
    assert letter.headers == {"x-system": "ERP", "business.order": "4711"}
    # What a replay needs to rebuild the message as it was: persistent, its priority and type.
    assert letter.properties["delivery_mode"] == 2
    assert (letter.properties["priority"], letter.properties["type"]) == (7, "order.created")
    (death,) = letter.history
    assert death["source"] == "amqp"
    (x_death,) = death["x_death"]
    assert (x_death["queue"], x_death["exchange"], x_death["reason"]) == (
        orders,
        orders,
        "rejected",
    )
    assert x_death["routing-keys"] == ["order.created"] and x_death["count"] == 1
    assert broker.waiting(f"{orders}.dlq") == 0


def test_messages_it_cannot_store_are_rejected_and_do_not_hold_up_the_queue(
    transactional_db: Any, broker: Broker, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    orders = broker.orders_declare()
    # Published straight into the DLQ: no x-death, so nobody knows where it was going.
    Producer(broker.channel).publish(
        b"secret payload", exchange="", routing_key=f"{orders}.dlq", message_id="msg-stray"
    )
    # PostgreSQL cannot keep a NUL character in a header.
    broker.publish(orders, b"<order/>", message_id="msg-nul", headers={"note": "a\x00b"})
    broker.publish(orders, b"<order id='4712'/>", message_id="msg-order-4712")
    consumer_rejects(broker, orders, count=2)
    broker.wait_for(f"{orders}.dlq", 3)

    call_command(
        "consume_dead_letters", "--amqp-url", amqp_url, "--queue", f"{orders}.dlq",
        "--idle-exit", "2",
    )  # fmt: skip

    assert list(DeadLetter.objects.values_list("message_id", flat=True)) == ["msg-order-4712"]
    assert broker.waiting(f"{orders}.dlq") == 0
    refusals = {
        record.__dict__["message_id"]: record.__dict__
        for record in caplog.records
        if "refused" in record.getMessage()
    }
    assert refusals.keys() == {"msg-stray", "msg-nul"}
    assert refusals["msg-stray"]["field"] == "queue"
    assert refusals["msg-stray"]["queue"] == f"{orders}.dlq"
    assert "unsupported Unicode escape sequence" in refusals["msg-nul"]["problem"]
    assert "secret payload" not in caplog.text


# --- The command as a process of its own, killed and stopped --------------------------------


def database_url_of_tests() -> str:
    """The test database, for a command run as a subprocess."""
    database = connection.settings_dict
    user = quote(database["USER"]) + (
        f":{quote(database['PASSWORD'])}" if database["PASSWORD"] else ""
    )
    port = f":{database['PORT']}" if database["PORT"] else ""
    name = quote(database["NAME"])
    if database["HOST"].startswith("/"):  # the embedded PostgreSQL: a unix socket only
        return f"postgresql://{user}@{port}/{name}?host={quote(database['HOST'])}"
    return f"postgresql://{user}@{database['HOST'] or '127.0.0.1'}{port}/{name}"


def consumer_start(
    amqp_url: str, queue: str, log: Path, *options: str, database_url: str = ""
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url or database_url_of_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "TIDELINE_HOME": os.environ["TIDELINE_HOME"],
    }
    command = [sys.executable, "manage.py", "consume_dead_letters"]
    command += ["--amqp-url", amqp_url, "--queue", queue, *options]
    with log.open("ab") as output:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)


def stored_while_running(consumer: subprocess.Popen[bytes], log: Path, at_least: int) -> None:
    """Wait until the consumer has stored `at_least` dead letters."""

    def stored() -> bool:
        assert consumer.poll() is None, log.read_text()
        return DeadLetter.objects.count() >= at_least

    until(stored, f"{at_least} dead letters", seconds=60)


def finished(consumer: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> str:
    try:
        assert consumer.wait(timeout=seconds) == 0, log.read_text()
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    return log.read_text()


@pytest.fixture
def backlog(broker: Broker) -> str:
    """A DLQ holding BACKLOG dead-lettered stock messages; returns its name."""
    orders = broker.orders_declare(expire_at_once=True)
    for line in range(BACKLOG):
        broker.publish(orders, f"<stock line='{line}'/>".encode(), message_id=f"msg-stock-{line}")
    broker.wait_for(f"{orders}.dlq", BACKLOG)
    return f"{orders}.dlq"


def test_killed_mid_stream_and_restarted_it_loses_and_duplicates_nothing(
    transactional_db: Any, broker: Broker, backlog: str, amqp_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "consumer.log"
    consumer = consumer_start(amqp_url, backlog, log, "--batch", "5")
    try:
        stored_while_running(consumer, log, at_least=BACKLOG // 3)
    finally:
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
    stored_at_kill = DeadLetter.objects.count()
    assert stored_at_kill < BACKLOG, "the kill must come mid-stream"

    said = finished(consumer_start(amqp_url, backlog, log, "--idle-exit", "2"), log)

    assert DeadLetter.objects.count() == BACKLOG
    assert (
        sorted(len(history) for history in DeadLetter.objects.values_list("history", flat=True))
        == [1] * BACKLOG
    )
    assert f"Dead letters: {BACKLOG - stored_at_kill} new, 0 reopened" in said
    assert broker.waiting(backlog) == 0


def test_sigterm_stops_it_after_the_current_batch(
    transactional_db: Any, broker: Broker, backlog: str, amqp_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "consumer.log"
    consumer = consumer_start(amqp_url, backlog, log, "--batch", "5")
    try:
        stored_while_running(consumer, log, at_least=BACKLOG // 3)
    finally:
        consumer.send_signal(signal.SIGTERM)
    finished(consumer, log, seconds=10)

    # Every stored dead letter was acked and every other message is still waiting.
    stored = DeadLetter.objects.count()
    assert stored < BACKLOG, "the stop must come mid-stream"
    assert stored + broker.waiting(backlog) == BACKLOG


def test_it_acks_nothing_while_postgresql_is_unreachable(
    transactional_db: Any, broker: Broker, amqp_url: str, tmp_path: Path
) -> None:
    orders = broker.orders_declare()
    broker.publish(orders, b"\x00\x01\x02", message_id="msg-order-4713")
    consumer_rejects(broker, orders)
    broker.wait_for(f"{orders}.dlq", 1)
    with socket.socket() as unused:  # a port where no PostgreSQL listens
        unused.bind(("127.0.0.1", 0))
        nowhere = f"postgresql://postgres@127.0.0.1:{unused.getsockname()[1]}/tideline"

    log = tmp_path / "consumer.log"
    consumer = consumer_start(amqp_url, f"{orders}.dlq", log, database_url=nowhere)
    try:
        until(lambda: "cannot store; nothing acked, retrying" in log.read_text(), "a retry", 60)
    finally:
        consumer.send_signal(signal.SIGTERM)
    finished(consumer, log, seconds=10)
    assert broker.waiting(f"{orders}.dlq") == 1

    call_command(
        "consume_dead_letters", "--amqp-url", amqp_url, "--queue", f"{orders}.dlq",
        "--idle-exit", "1",
    )  # fmt: skip
    assert DeadLetter.objects.get().message_id == "msg-order-4713"
    assert broker.waiting(f"{orders}.dlq") == 0
