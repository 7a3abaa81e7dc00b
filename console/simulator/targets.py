"""`simulate --targets`: the receiving systems, standing in for QMS and FIN.

An HTTP receiver (QMS certificates, FIN invoice bases) and an AMQP consumer (the QMS
certificate queue) that deduplicate by `Idempotency-Key`, as a well-built target does: a
message it has seen is answered 200 and not processed again. FIN refuses an invoice basis
whose currency is not an ISO 4217 code (422), so a bad one must be repaired before it goes
through. What a target accepts is handed to the engine, which records the step as
delivered and lets the flow move on.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kombu import Connection

from console.simulator.failures import queue_arguments

log = logging.getLogger(__name__)

PATHS = ("qms/certificates", "fin/invoices")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


@dataclass(frozen=True)
class Arrival:
    """A message a target took for the first time."""

    path: str
    correlation_id: str
    carrier: dict[str, str]


class Seen:
    """Idempotency keys already processed, shared by the targets."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True


def invoice_problem(body: bytes) -> str:
    try:
        invoice = json.loads(body)
    except ValueError:
        return "the invoice basis is not JSON"
    if not isinstance(invoice, dict):
        return "the invoice basis is not a JSON object"
    if not _CURRENCY.match(str(invoice.get("currency", ""))):
        return f"currency {invoice.get('currency')!r} is not an ISO 4217 code"
    amount = invoice.get("amount")
    if not isinstance(amount, int | float) or amount < 0:
        return "amount must be a number of at least 0"
    return ""


class HttpTargets:
    """POST /qms/certificates and /fin/invoices on 127.0.0.1:`port`."""

    def __init__(self, *, port: int, arrivals: queue.Queue[Arrival], seen: Seen) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(arrivals, seen))
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(arrivals: queue.Queue[Arrival], seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = self.path.strip("/").split("?")[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path not in PATHS:
                self._answer(404, "no such target")
                return
            if path == "fin/invoices" and (problem := invoice_problem(body)):
                self._answer(422, problem)
                return
            key = self.headers.get("Idempotency-Key") or self.headers.get("X-Message-Id") or ""
            if key and not seen.first_time(key):
                self._answer(200, "already received; not processed again")
                return
            arrivals.put(
                Arrival(
                    path=path,
                    correlation_id=self.headers.get("X-Correlation-Id", ""),
                    carrier=_carrier(dict(self.headers.items())),
                )
            )
            self._answer(200, "received")

        def _answer(self, status: int, words: str) -> None:
            body = json.dumps({"detail": words}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def _carrier(headers: dict[str, Any]) -> dict[str, str]:
    lowered = {str(name).lower(): value for name, value in headers.items()}
    return {name: str(lowered[name]) for name in _TRACE_HEADERS if name in lowered}


class AmqpTarget:
    """Consumes the QMS certificate queue, where replays of its dead letters are published."""

    def __init__(
        self, *, amqp_url: str, queue_name: str, arrivals: queue.Queue[Arrival], seen: Seen
    ) -> None:
        self.amqp_url, self.queue_name = amqp_url, queue_name
        self.arrivals, self.seen = arrivals, seen
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._consume, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def _consume(self) -> None:
        """Consume until stopped; a lost broker is waited for, as a real consumer would."""
        while not self.stopping.is_set():
            try:
                self._session()
            except Exception as error:  # the target outlives a broker outage
                log.warning("simulator: the QMS target lost RabbitMQ", extra={"error": str(error)})
                self.stopping.wait(2.0)

    def _session(self) -> None:
        with Connection(self.amqp_url, connect_timeout=5, heartbeat=0) as broker:
            channel = broker.channel()
            channel.queue_declare(
                queue=self.queue_name,
                durable=True,
                auto_delete=False,
                arguments=queue_arguments(f"{self.queue_name}.dlq"),
            )
            channel.basic_consume(queue=self.queue_name, callback=self._arrived)
            while not self.stopping.is_set():
                try:
                    broker.drain_events(timeout=0.5)
                except TimeoutError:
                    continue

    def _arrived(self, message: Any) -> None:
        headers = message.headers or {}
        key = str(headers.get("Idempotency-Key") or message.properties.get("message_id") or "")
        if not key or self.seen.first_time(key):
            correlation = message.properties.get("correlation_id") or headers.get(
                "X-Correlation-Id"
            )
            self.arrivals.put(
                Arrival(
                    path="qms/certificates",
                    correlation_id=str(correlation or ""),
                    carrier=_carrier(headers),
                )
            )
        message.channel.basic_ack(message.delivery_tag)
