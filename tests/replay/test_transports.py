"""replay.transports against real parts: an HTTP server in the test, RabbitMQ and Redis.

Every AMQP test declares its own exchange and queues (a uuid in every name) and deletes
them; every Redis test adds to its own stream and deletes it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import redis
from amqp.basic_message import Message
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue

from replay.transports import (
    AMQP_TO_EXCHANGE_WARNING,
    Delivery,
    DestinationInvalid,
    deliver,
    deliver_together,
    destination_address,
    request_preview,
)
from tests.conftest import require_service
from tracing.ingest.amqp import dead_letter_document

AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
RABBITMQ = urlsplit(AMQP_URL)
RABBITMQ_AT = f"{RABBITMQ.hostname}:{RABBITMQ.port or 5672}"  # as outcomes name it
TIMEOUT = 5.0
EVERY_BYTE = bytes(range(256))
FIVE_MEGABYTES = os.urandom(5 * 1024 * 1024)
# What RabbitMQ adds when it dead-letters a message, and what a replay must not send on.
DEAD_LETTERING_HEADERS: dict[str, Any] = {
    "x-death": [{"count": 1, "queue": "orders.wms", "reason": "rejected"}],
    "x-first-death-queue": "orders.wms",
    "x-first-death-reason": "rejected",
    "x-last-death-exchange": "orders",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def a_delivery(transport: str, destination: dict[str, Any], **changes: Any) -> Delivery:
    """Order 4711's stock reservation for the WMS, as a dead letter keeps it."""
    delivery = Delivery(
        transport=transport,
        destination=destination,
        payload=EVERY_BYTE,
        content_type="application/octet-stream",
        headers={
            "business.order": "4711",
            "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        },
        properties={},
        message_id="msg-order-4711",
        idempotency_key="tl-" + "7" * 40,
        attempt_id=str(uuid.uuid4()),
        broker_url="",
    )
    return replace(delivery, **changes)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: bound, so nobody else takes it, and never listening."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        yield unused.getsockname()[1]


# --- HTTP ---------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class HttpTarget:
    """A WMS endpoint that records every request; `answer` is what it does then."""

    answer: str  # accept | accept, then hang up | unavailable | hang | close | redirect
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    redirect_to: str = ""


def _handler(target: HttpTarget) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target.requests.append(
                Request(self.command, self.path, list(self.headers.items()), body)
            )
            if target.answer == "close":
                self.close_connection = True  # hang up without a word
                return
            if target.answer == "accept, then hang up":
                self.close_connection = True  # as an idle timeout would, after the answer
            if target.answer == "hang":
                target.released.wait(30)
            if target.answer == "unavailable":
                self._answer(503, b"WMS is down for maintenance until 06:00")
            elif target.answer == "redirect":
                self._answer(307, b"", location=target.redirect_to)
            else:
                self._answer(202, b"reserved")

        def _answer(self, status: int, body: bytes, location: str = "") -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture
def http_target() -> Iterator[Callable[..., HttpTarget]]:
    servers: list[tuple[HttpTarget, ThreadingHTTPServer]] = []

    def start(answer: str = "accept") -> HttpTarget:
        target = HttpTarget(answer)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
        target.url = f"http://127.0.0.1:{server.server_address[1]}/wms/stock-reservations"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((target, server))
        return target

    yield start
    for target, server in servers:
        target.released.set()
        server.shutdown()
        server.server_close()


def test_http_sends_every_byte_value_with_the_replay_headers_and_without_x_death(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target()
    headers = {
        **DEAD_LETTERING_HEADERS,
        "business.order": "4711",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "only for the old connection",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "Content-Length": "999",
        "Host": "old-wms.internal",
        "Content-Type": "text/plain",
        "X-Batch": ["B-17", "B-18"],
    }
    delivery = a_delivery("http", {"url": wms.url}, headers=headers)

    outcome = deliver(delivery, timeout=TIMEOUT)

    assert (outcome.state, outcome.status) == ("delivered", 202)
    port = wms.url.split(":")[2].split("/")[0]
    assert outcome.detail == f"HTTP 202 from 127.0.0.1:{port}: Accepted"
    (request,) = wms.requests
    assert (request.method, request.path) == ("POST", "/wms/stock-reservations")
    assert request.body == EVERY_BYTE and sha256(request.body) == sha256(delivery.payload)
    assert request.header("Idempotency-Key") == delivery.idempotency_key
    assert request.header("X-Tideline-Replay-Attempt") == delivery.attempt_id
    assert request.header("X-Message-Id") == "msg-order-4711"
    assert request.header("Content-Type") == "application/octet-stream"
    assert request.header("business.order") == "4711"
    assert [value for name, value in request.headers if name == "X-Batch"] == ["B-17", "B-18"]
    assert request.header("Host") == f"127.0.0.1:{port}"
    assert request.header("Content-Length") == "256"
    names = {name.lower() for name, _ in request.headers}
    assert not names & {"x-death", "x-first-death-queue", "x-first-death-reason"}
    assert not names & {"x-last-death-exchange", "x-hop", "keep-alive", "transfer-encoding"}


def test_http_sends_five_megabytes_byte_for_byte(http_target: Callable[..., HttpTarget]) -> None:
    wms = http_target()

    outcome = deliver(a_delivery("http", {"url": wms.url}, payload=FIVE_MEGABYTES), timeout=TIMEOUT)

    assert outcome.state == "delivered"
    (request,) = wms.requests
    assert len(request.body) == 5 * 1024 * 1024
    assert sha256(request.body) == sha256(FIVE_MEGABYTES)


def test_http_keeps_the_message_id_header_the_original_had(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target()
    delivery = a_delivery("http", {"url": wms.url}, headers={"x-message-id": "erp-4711-v2"})

    deliver(delivery, timeout=TIMEOUT)

    (request,) = wms.requests
    assert request.header("X-Message-Id") == "erp-4711-v2"


def test_http_503_is_failed_with_the_status_and_the_targets_words(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target("unavailable")

    outcome = deliver(a_delivery("http", {"url": wms.url}), timeout=TIMEOUT)

    assert (outcome.state, outcome.status) == ("failed", 503)
    assert "HTTP 503 from 127.0.0.1:" in outcome.detail
    assert outcome.detail.endswith(
        ": Service Unavailable — WMS is down for maintenance until 06:00"
    )
    assert len(wms.requests) == 1


def test_http_a_target_that_hangs_past_the_timeout_is_unknown(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target("hang")
    started = time.monotonic()

    outcome = deliver(a_delivery("http", {"url": wms.url}), timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 3
    assert (outcome.state, outcome.status) == ("unknown", None)
    assert "timed out after 0.5 s waiting for the answer from 127.0.0.1:" in outcome.detail
    assert "it may have received the message" in outcome.detail
    assert len(wms.requests) == 1  # it did arrive: why the outcome must not say failed


def test_http_a_target_that_hangs_up_without_answering_is_unknown(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target("close")

    outcome = deliver(a_delivery("http", {"url": wms.url}), timeout=TIMEOUT)

    assert outcome.state == "unknown"
    assert "closed the connection without answering" in outcome.detail
    assert len(wms.requests) == 1


def test_http_replays_after_the_target_hung_up_a_kept_connection_are_each_delivered_once(
    http_target: Callable[..., HttpTarget],
) -> None:
    """A worker keeps its connection to a target between replays; one the target has closed
    meanwhile must not make the next replay fail or land in doubt."""
    wms = http_target("accept, then hang up")
    replays = [a_delivery("http", {"url": wms.url}, attempt_id=str(uuid.uuid4())) for _ in range(3)]

    outcomes = []
    for delivery in replays:
        outcomes.append(deliver(delivery, timeout=TIMEOUT))
        time.sleep(0.2)  # the hang-up reaches the worker before the next replay

    assert [outcome.state for outcome in outcomes] == ["delivered"] * 3
    sent = [request.header("X-Tideline-Replay-Attempt") for request in wms.requests]
    assert sent == [delivery.attempt_id for delivery in replays]


def test_http_nothing_listening_is_failed_and_nothing_was_sent(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/wms/in"

    outcome = deliver(a_delivery("http", {"url": url}), timeout=TIMEOUT)

    assert (outcome.state, outcome.status) == ("failed", None)
    assert outcome.detail.startswith(f"could not connect to 127.0.0.1:{closed_port}: ")
    assert outcome.detail.endswith("; nothing was sent")


def test_http_redirects_are_not_followed(http_target: Callable[..., HttpTarget]) -> None:
    elsewhere, wms = http_target(), http_target("redirect")
    wms.redirect_to = elsewhere.url

    outcome = deliver(a_delivery("http", {"url": wms.url}), timeout=TIMEOUT)

    assert (outcome.state, outcome.status) == ("failed", 307)
    assert f"redirect to {elsewhere.url} not followed" in outcome.detail
    assert (len(wms.requests), len(elsewhere.requests)) == (1, 0)


def test_http_preview_is_the_exact_request_and_sends_nothing(
    http_target: Callable[..., HttpTarget],
) -> None:
    wms = http_target()
    delivery = a_delivery(
        "http", {"url": wms.url}, payload=b'{"order": "4711", "sku": "COD-LOIN"}',
        content_type="application/json", headers={**DEAD_LETTERING_HEADERS, "business.order": "4711"},
    )  # fmt: skip

    preview = request_preview(delivery)

    assert wms.requests == []
    assert preview["transport"] == "http" and preview["method"] == "POST"
    assert preview["url"] == preview["address"] == wms.url
    assert preview["body"] == '{"order": "4711", "sku": "COD-LOIN"}'
    assert preview["body_encoding"] == "utf-8" and preview["size"] == len(delivery.payload)
    assert preview["sha256"] == sha256(delivery.payload)
    deliver(delivery, timeout=TIMEOUT)
    (request,) = wms.requests
    assert dict(request.headers) == preview["headers"]  # what was shown is what was sent


def test_http_preview_shows_a_binary_body_as_base64_and_hides_the_password() -> None:
    url = "https://replay:s3cret@wms.internal/in"

    preview = request_preview(a_delivery("http", {"url": url}))

    assert preview["body_encoding"] == "base64" and preview["size"] == 256
    assert preview["body"].startswith("AAECAwQF")
    assert preview["url"] == "https://replay:***@wms.internal/in"
    assert preview["address"] == "https://wms.internal/in"
    assert "s3cret" not in json.dumps(preview)


def test_http_without_a_url_fails_before_sending() -> None:
    outcome = deliver(a_delivery("http", {"url": "ftp://wms.internal/in"}), timeout=TIMEOUT)

    assert outcome.state == "failed"
    assert outcome.detail == (
        "The URL 'ftp://wms.internal/in' is not an http:// or https:// URL. Nothing was sent."
    )


class Blackout:
    """A TCP relay to a broker that, once `cut_after` bytes have gone out, lets the rest of
    them through but no answer back: the broker has the message, the sender never hears so.
    `hang_up_after` seconds later it hangs up on the sender; None: it stays silent."""

    def __init__(self, upstream: tuple[str, int], cut_after: int, hang_up_after: float | None):
        self.upstream, self.cut_after, self.hang_up_after = upstream, cut_after, hang_up_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            sender, _ = self.listener.accept()
        except OSError:
            return  # closed before anyone came
        upstream = socket.create_connection(self.upstream)
        self.sockets += [sender, upstream]
        threading.Thread(target=self._relay, args=(sender, upstream, True), daemon=True).start()
        threading.Thread(target=self._relay, args=(upstream, sender, False), daemon=True).start()
        if self.hang_up_after is not None and self.cut.wait(30):
            time.sleep(self.hang_up_after)  # the rest of the message reaches the broker
            _hang_up(sender)

    def _relay(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        passed = 0
        while chunk := _received(source):
            passed += len(chunk)
            if outbound and passed >= self.cut_after:
                self.cut.set()
            if outbound or not self.cut.is_set():
                with contextlib.suppress(OSError):
                    sink.sendall(chunk)

    def close(self) -> None:
        for sock in self.sockets:
            _hang_up(sock)


def _received(source: socket.socket) -> bytes:
    try:
        return source.recv(65536)
    except OSError:
        return b""


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# --- Destination addresses ----------------------------------------------------------------


def test_destination_addresses_have_one_form_per_transport_and_no_credentials() -> None:
    orders = {"exchange": "orders", "routing_key": "order.created", "queue": "orders.wms"}
    broker = "amqp://tideline:s3cret@Broker-Host:5672//"
    cache = "redis://:s3cret@Cache:6379/3"
    addresses = [
        destination_address("http", {"url": "http://u:s3cret@WMS.internal:80/a/../in?key=s3cret#x"}, ""),
        destination_address("http", {"url": "https://wms.internal:8443/in"}, ""),
        destination_address("amqp", orders, broker),
        destination_address("amqp", orders, broker, amqp_to_exchange=True),
        destination_address("amqp", {**orders, "url": "amqps://u:s3cret@erp-mq:5671/erp"}, broker),
        destination_address("amqp", {"queue": "parking/orders"}, "amqp://mq:5673/prod%2Fa"),
        destination_address("amqp", {"exchange": "", "routing_key": "orders.wms"}, broker,
                            amqp_to_exchange=True),
        destination_address("redis", {"stream": "stock"}, cache),
        destination_address("redis", {"stream": "stock:updates", "url": "rediss://c:6380"}, cache),
        destination_address("redis", {"stream": "stock"}, "redis+socket:///run/redis.sock?db=2"),
    ]  # fmt: skip

    assert addresses == [
        "http://wms.internal/in",
        "https://wms.internal:8443/in",
        "amqp://broker-host/%2F/queue/orders.wms",
        "amqp://broker-host/%2F/exchange/orders",
        "amqps://erp-mq/erp/queue/orders.wms",
        "amqp://mq:5673/prod%2Fa/queue/parking%2Forders",
        "amqp://broker-host/%2F/queue/orders.wms",  # the default exchange routes to that queue
        "redis://cache/3/stream/stock",
        "rediss://c:6380/0/stream/stock:updates",
        "redis+socket:///run/redis.sock/2/stream/stock",
    ]


def test_destination_address_refuses_a_destination_with_nowhere_to_go() -> None:
    with pytest.raises(DestinationInvalid, match="does not say which queue it died in"):
        destination_address("amqp", {"exchange": "orders"}, "amqp://mq//")
    with pytest.raises(DestinationInvalid, match="names no amqp broker"):
        destination_address("amqp", {"queue": "orders.wms"}, "")
    with pytest.raises(DestinationInvalid, match="must be a amqp:// or"):
        destination_address("amqp", {"queue": "orders.wms"}, "redis://cache/0")
    with pytest.raises(DestinationInvalid, match="has no stream"):
        destination_address("redis", {}, "redis://cache/0")


# --- AMQP ---------------------------------------------------------------------------------


@functools.cache
def rabbitmq_reachable() -> bool:
    probe = Connection(AMQP_URL, connect_timeout=2)
    try:
        probe.connect()
    except (*probe.connection_errors, *probe.channel_errors):
        return False
    finally:
        probe.release()
    return True


class Broker:
    """The test's own RabbitMQ channel, and what it declared, to delete afterwards."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.declared: list[Exchange | Queue] = []

    def orders_declare(self, kind: str = "fanout") -> str:
        """An orders exchange with two subscribers: <name>.wms and <name>.finance."""
        name = f"tideline-test-replay-{uuid.uuid4().hex[:12]}"
        orders = Exchange(name, kind, durable=False)
        for entity in (
            orders,
            Queue(f"{name}.wms", orders, "order.#", durable=False),
            Queue(f"{name}.finance", orders, "order.*", durable=False),
        ):
            bound = entity(self.channel)
            bound.declare()
            self.declared.append(bound)
        return name

    def queue_declare(self, name: str, **arguments: Any) -> None:
        queue = Queue(name, durable=False, queue_arguments=arguments or None)(self.channel)
        queue.declare()
        self.declared.append(queue)

    def waiting(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue=queue, passive=True).message_count)

    def take(self, queue: str) -> Message:
        message = self.channel.basic_get(queue, no_ack=True)
        assert message is not None, f"nothing in {queue}"
        return message

    def delete_declared(self) -> None:
        for entity in reversed(self.declared):
            entity.delete()


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Connection(AMQP_URL) as connection:
        broker = Broker(connection)
        try:
            yield broker
        finally:
            broker.delete_declared()


def died_in_wms(orders: str, **changes: Any) -> Delivery:
    """An order message that died in the WMS queue, published to the orders exchange."""
    delivery = a_delivery(
        "amqp",
        {"exchange": orders, "routing_key": "order.created", "queue": f"{orders}.wms"},
        broker_url=AMQP_URL,
        correlation_id="4711",
        headers={**DEAD_LETTERING_HEADERS, "business.order": "4711", "CC": [f"{orders}.finance"]},
        properties={
            "delivery_mode": 1, "priority": 7, "type": "order.created", "app_id": "erp",
            "reply_to": "erp.replies", "timestamp": "2025-03-14T09:26:53+00:00",
        },
    )  # fmt: skip
    return replace(delivery, **changes)


@pytest.mark.rabbitmq
def test_amqp_lands_once_in_the_queue_it_died_in_and_no_other_subscriber_gets_it(
    broker: Broker,
) -> None:
    orders = broker.orders_declare("fanout")
    delivery = died_in_wms(orders)

    outcome = deliver(delivery, timeout=TIMEOUT)

    assert outcome.state == "delivered"
    assert outcome.detail == (
        f"published to queue {orders}.wms on {RABBITMQ_AT}, confirmed by RabbitMQ"
    )
    assert (broker.waiting(f"{orders}.wms"), broker.waiting(f"{orders}.finance")) == (1, 0)
    message = broker.take(f"{orders}.wms")
    assert message.body == EVERY_BYTE and sha256(message.body) == sha256(delivery.payload)
    assert message.headers == {
        "business.order": "4711",
        "Idempotency-Key": delivery.idempotency_key,
        "x-tideline-replay-attempt": delivery.attempt_id,
    }
    properties = message.properties
    assert properties["delivery_mode"] == 2  # persistent, whatever it was
    assert (properties["message_id"], properties["correlation_id"]) == ("msg-order-4711", "4711")
    assert (properties["priority"], properties["type"]) == (7, "order.created")
    assert (properties["app_id"], properties["reply_to"]) == ("erp", "erp.replies")
    assert properties["content_type"] == "application/octet-stream"
    assert properties["timestamp"] == 1741944413  # 2025-03-14T09:26:53Z


@pytest.mark.rabbitmq
def test_amqp_sends_five_megabytes_byte_for_byte(broker: Broker) -> None:
    orders = broker.orders_declare()

    outcome = deliver(died_in_wms(orders, payload=FIVE_MEGABYTES), timeout=TIMEOUT)

    assert outcome.state == "delivered"
    body = broker.take(f"{orders}.wms").body
    assert len(body) == 5 * 1024 * 1024 and sha256(body) == sha256(FIVE_MEGABYTES)


@pytest.mark.rabbitmq
def test_amqp_to_the_original_exchange_fans_out_again_when_asked_to(broker: Broker) -> None:
    orders = broker.orders_declare("topic")
    delivery = died_in_wms(orders, amqp_to_exchange=True)

    preview = request_preview(delivery)
    outcome = deliver(delivery, timeout=TIMEOUT)

    assert preview["warning"] == AMQP_TO_EXCHANGE_WARNING
    assert (preview["exchange"], preview["routing_key"]) == (orders, "order.created")
    assert outcome.state == "delivered"
    assert f"exchange {orders} with routing key 'order.created'" in outcome.detail
    assert (broker.waiting(f"{orders}.wms"), broker.waiting(f"{orders}.finance")) == (1, 1)


@pytest.mark.rabbitmq
def test_amqp_to_a_queue_that_no_longer_exists_is_failed(broker: Broker) -> None:
    orders = broker.orders_declare()
    gone = {"exchange": orders, "routing_key": "order.created", "queue": f"{orders}.gone"}

    outcome = deliver(died_in_wms(orders, destination=gone), timeout=TIMEOUT)

    assert outcome.state == "failed"
    assert f"RabbitMQ at {RABBITMQ_AT} refused it (queue {orders}.gone): NO_ROUTE (312)" in (
        outcome.detail
    )
    assert (broker.waiting(f"{orders}.wms"), broker.waiting(f"{orders}.finance")) == (0, 0)


@pytest.mark.rabbitmq
def test_amqp_to_an_exchange_that_no_longer_exists_is_failed(broker: Broker) -> None:
    missing = f"tideline-test-replay-{uuid.uuid4().hex[:12]}"

    outcome = deliver(died_in_wms(missing, amqp_to_exchange=True), timeout=TIMEOUT)

    assert outcome.state == "failed"
    assert "NOT_FOUND - no exchange" in outcome.detail and "(404)" in outcome.detail


@pytest.mark.rabbitmq
def test_amqp_replays_after_a_refused_one_are_delivered_once_each(broker: Broker) -> None:
    """A worker keeps its channel between replays; a replay RabbitMQ refused must not spoil
    the ones after it."""
    orders = broker.orders_declare()
    gone = {"exchange": orders, "routing_key": "order.created", "queue": f"{orders}.gone"}

    refused = deliver(died_in_wms(orders, destination=gone), timeout=TIMEOUT)
    outcomes = [deliver(died_in_wms(orders), timeout=TIMEOUT) for _ in range(3)]

    assert refused.state == "failed" and "NO_ROUTE" in refused.detail
    assert [outcome.state for outcome in outcomes] == ["delivered"] * 3
    assert broker.waiting(f"{orders}.wms") == 3


@pytest.mark.rabbitmq
def test_amqp_a_group_is_confirmed_message_by_message(broker: Broker) -> None:
    """Published together, confirmed together: the one no queue took and the one to an
    exchange that does not exist are failed, each for its own reason; the rest arrive once."""
    orders = broker.orders_declare()
    missing = f"tideline-test-replay-{uuid.uuid4().hex[:12]}"
    group = [replace(died_in_wms(orders), attempt_id=f"attempt-{n}") for n in range(12)]
    group[4] = replace(group[4], destination={"queue": f"{orders}.gone"})
    group[7] = replace(died_in_wms(missing, amqp_to_exchange=True), attempt_id="attempt-7")
    group[9] = replace(group[9], headers={**group[9].headers, "x-counter": 2**70})

    outcomes = deliver_together(group, timeout=TIMEOUT)

    states = [outcome.state for outcome in outcomes]
    failed = (4, 7, 9)
    assert states == ["failed" if n in failed else "delivered" for n in range(12)]
    assert f"refused it (queue {orders}.gone): NO_ROUTE (312)" in outcomes[4].detail
    assert "NOT_FOUND - no exchange" in outcomes[7].detail and "(404)" in outcomes[7].detail
    assert "headers cannot be encoded for AMQP" in outcomes[9].detail
    arrived = [broker.take(f"{orders}.wms").headers["x-tideline-replay-attempt"] for _ in range(9)]
    assert sorted(arrived) == sorted(f"attempt-{n}" for n in range(12) if n not in failed)
    assert broker.waiting(f"{orders}.wms") == 0, "each once"
    # The worker's channel is still good for the next group.
    assert deliver(died_in_wms(orders), timeout=TIMEOUT).state == "delivered"


@pytest.mark.rabbitmq
def test_amqp_nothing_listening_is_failed(broker: Broker, closed_port: int) -> None:
    orders = broker.orders_declare()
    nowhere = f"amqp://guest:guest@127.0.0.1:{closed_port}//"

    outcome = deliver(died_in_wms(orders, broker_url=nowhere), timeout=TIMEOUT)

    assert outcome.state == "failed"
    assert outcome.detail.startswith(f"could not connect to 127.0.0.1:{closed_port}: ")
    assert outcome.detail.endswith("; nothing was sent")


@pytest.mark.rabbitmq
def test_amqp_a_connection_lost_before_the_confirm_is_unknown(broker: Broker) -> None:
    orders = broker.orders_declare()
    upstream = (RABBITMQ.hostname or "127.0.0.1", RABBITMQ.port or 5672)
    relay = Blackout(upstream, len(FIVE_MEGABYTES) // 2, hang_up_after=0.5)
    userinfo = RABBITMQ.netloc.rpartition("@")[0]
    through_relay = RABBITMQ._replace(netloc=f"{userinfo}@127.0.0.1:{relay.port}").geturl()
    try:
        outcome = deliver(
            died_in_wms(orders, payload=FIVE_MEGABYTES, broker_url=through_relay), timeout=TIMEOUT
        )
    finally:
        relay.close()

    assert outcome.state == "unknown"
    assert "before it confirmed" in outcome.detail and "it may have taken" in outcome.detail
    assert broker.waiting(f"{orders}.wms") == 1  # it did arrive: why it must not say failed


@pytest.mark.rabbitmq
def test_amqp_a_message_rabbitmq_dead_lettered_goes_back_to_its_queue_as_it_was(
    broker: Broker,
) -> None:
    """The dead letter as `consume_dead_letters` stores it, replayed."""
    orders = broker.orders_declare("fanout")
    stock = f"{orders}.stock"
    broker.queue_declare(f"{orders}.dlq")
    broker.queue_declare(stock, **{
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{orders}.dlq",
    })  # fmt: skip
    broker.channel.queue_bind(stock, orders, "order.created")
    Producer(broker.channel).publish(
        EVERY_BYTE, exchange=orders, routing_key="order.created",
        content_type="application/octet-stream", content_encoding="binary",
        message_id="msg-order-4711", correlation_id="4711", priority=7, type="order.created",
        headers={"business.order": "4711"},
    )  # fmt: skip
    first = broker.channel.basic_get(stock, no_ack=False)
    assert first is not None
    broker.channel.basic_reject(first.delivery_tag, requeue=False)  # the stock service gives up
    dead = _wait_for_message(broker, f"{orders}.dlq")
    assert "x-death" in dead.headers
    document = dead_letter_document(dead, queue=f"{orders}.dlq", system=None)
    assert document["queue"] == stock

    replay = a_delivery(
        "amqp", {key: document[key] for key in ("exchange", "routing_key", "queue")},
        broker_url=AMQP_URL, payload=base64.b64decode(document["payload"]),
        content_type=document["content_type"], headers=document["headers"],
        properties=document["properties"], message_id=document["message_id"],
        correlation_id=document["correlation_id"],
    )  # fmt: skip
    outcome = deliver(replay, timeout=TIMEOUT)

    assert outcome.state == "delivered"
    # The stock queue has it again; the other subscribers still hold only the first copy.
    assert [broker.waiting(f"{orders}.{name}") for name in ("stock", "wms", "finance")] == [1, 1, 1]
    again = broker.take(stock)
    assert again.body == EVERY_BYTE
    assert again.headers == {
        "business.order": "4711",
        "Idempotency-Key": replay.idempotency_key,
        "x-tideline-replay-attempt": replay.attempt_id,
    }
    properties = again.properties
    assert (properties["message_id"], properties["correlation_id"]) == ("msg-order-4711", "4711")
    assert (properties["priority"], properties["type"]) == (7, "order.created")
    assert (properties["delivery_mode"], properties["content_encoding"]) == (2, "binary")


def _wait_for_message(broker: Broker, queue: str) -> Message:
    deadline = time.monotonic() + 10
    while (message := broker.channel.basic_get(queue, no_ack=True)) is None:
        assert time.monotonic() < deadline, f"nothing reached {queue}"
        time.sleep(0.02)
    return message


# Without RabbitMQ the AMQP tests are left out and this one says why: one line, not eight.
if not rabbitmq_reachable():
    for name in [name for name in globals() if name.startswith("test_amqp_")]:
        del globals()[name]

    def test_amqp_needs_rabbitmq() -> None:
        require_service(
            False,
            f"RabbitMQ is not reachable at {Connection(AMQP_URL).as_uri()} "
            "(TIDELINE_TEST_AMQP_URL): the AMQP transport tests did not run",
        )


# --- Redis --------------------------------------------------------------------------------


def _redis_url() -> str:
    url = str(getattr(settings, "REDIS_URL", "") or "redis://127.0.0.1:6379/11")
    return "unix" + url.removeprefix("redis+socket") if url.startswith("redis+socket:") else url


@pytest.fixture
def redis_stream() -> Iterator[tuple[str, redis.Redis]]:
    client = redis.Redis.from_url(_redis_url())
    try:
        client.ping()
    except redis.RedisError:
        require_service(False, f"Redis is not reachable at {_redis_url()} (REDIS_URL)")
    stream = f"tideline-test-replay:{uuid.uuid4().hex[:12]}"
    yield stream, client
    client.delete(stream)
    client.close()


def stream_entries(client: redis.Redis, stream: str) -> list[tuple[str, dict[bytes, bytes]]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = cast(Any, client.xrange(stream))
    return [(entry_id.decode(), fields) for entry_id, fields in entries]


def test_redis_adds_every_byte_value_with_the_replay_fields(
    redis_stream: tuple[str, redis.Redis],
) -> None:
    stream, client = redis_stream
    headers = {**DEAD_LETTERING_HEADERS, "business.order": "4711", "Idempotency-Key": "old"}
    delivery = a_delivery(
        "redis", {"stream": stream}, broker_url=str(settings.REDIS_URL), headers=headers
    )

    outcome = deliver(delivery, timeout=TIMEOUT)

    assert outcome.state == "delivered"
    assert f"added to stream {stream} on " in outcome.detail and " as entry " in outcome.detail
    ((entry_id, fields),) = stream_entries(client, stream)
    assert outcome.detail.endswith(entry_id)
    assert fields[b"payload"] == EVERY_BYTE and sha256(fields[b"payload"]) == sha256(EVERY_BYTE)
    assert fields[b"content_type"] == b"application/octet-stream"
    assert fields[b"message_id"] == b"msg-order-4711"
    assert fields[b"Idempotency-Key"] == delivery.idempotency_key.encode()
    assert fields[b"replay_attempt"] == delivery.attempt_id.encode()
    assert json.loads(fields[b"headers"]) == {"business.order": "4711"}


def test_redis_adds_five_megabytes_byte_for_byte(redis_stream: tuple[str, redis.Redis]) -> None:
    stream, client = redis_stream
    delivery = a_delivery(
        "redis", {"stream": stream}, broker_url=str(settings.REDIS_URL), payload=FIVE_MEGABYTES
    )

    assert deliver(delivery, timeout=TIMEOUT).state == "delivered"

    ((_, fields),) = stream_entries(client, stream)
    assert sha256(fields[b"payload"]) == sha256(FIVE_MEGABYTES)


def test_redis_to_a_key_that_is_not_a_stream_is_failed(
    redis_stream: tuple[str, redis.Redis],
) -> None:
    stream, client = redis_stream
    client.set(stream, "a stock level, not a stream")

    outcome = deliver(
        a_delivery("redis", {"stream": stream}, broker_url=str(settings.REDIS_URL)), timeout=TIMEOUT
    )

    assert outcome.state == "failed" and "WRONGTYPE" in outcome.detail


def test_redis_nothing_listening_is_failed(closed_port: int) -> None:
    url = f"redis://127.0.0.1:{closed_port}/0"

    outcome = deliver(a_delivery("redis", {"stream": "stock", "url": url}), timeout=TIMEOUT)

    assert outcome.state == "failed"
    assert outcome.detail.startswith(f"could not connect to 127.0.0.1:{closed_port}: ")
    assert outcome.detail.endswith("; nothing was sent")


def test_redis_a_timeout_after_the_command_was_sent_is_unknown(
    redis_stream: tuple[str, redis.Redis],
) -> None:
    stream, client = redis_stream
    server = client.connection_pool.connection_kwargs
    require_service("host" in server, "the Redis of REDIS_URL listens on no TCP port")
    relay = Blackout((server["host"], server["port"]), len(FIVE_MEGABYTES) // 2, None)
    db = server.get("db", 0)
    delivery = a_delivery(
        "redis", {"stream": stream, "url": f"redis://127.0.0.1:{relay.port}/{db}"},
        payload=FIVE_MEGABYTES,
    )  # fmt: skip
    try:
        outcome = deliver(delivery, timeout=1)
    finally:
        relay.close()

    assert outcome.state == "unknown"
    assert outcome.detail == (
        f"timed out after 1 s waiting for Redis at 127.0.0.1:{relay.port} (stream {stream}); "
        "it may have added the message"
    )
    assert client.xlen(stream) == 1  # it did arrive: why it must not say failed
