"""Dead letters, the two ways a runtime gives up on a message.

- Through RabbitMQ, when it is reachable: the certificate goes to the queue QMS's adapter
  consumes, which has a dead-letter exchange; the adapter, answered 503 by QMS, rejects it,
  and RabbitMQ moves it to the dead-letter queue that `consume_dead_letters` stores.
- Else through `POST /ingest/v1/dead-letters`, with the HTTP destination it was going to.

A replay sends the message back where it died: the queue, or the URL named here — the
stand-in receivers of `--targets` when they run.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from kombu import Connection

from console.simulator.records import RETRY_DELAYS, RecordsRefused

ATTEMPTS = 5


@dataclass(frozen=True)
class Letter:
    """A message the runtime gave up on."""

    system: str
    message_id: str
    correlation_id: str
    payload: str
    content_type: str
    headers: dict[str, str]
    error: str
    first_failed_at: datetime
    last_failed_at: datetime


def queue_arguments(dead_letter_queue: str) -> dict[str, Any]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter_queue}


class AmqpDeadLetters:
    """Dies a message in `queue` (rejected by its consumer) so RabbitMQ dead-letters it."""

    def __init__(self, *, amqp_url: str, queue: str) -> None:
        self.queue, self.dead_letter_queue = queue, f"{queue}.dlq"
        self.broker = Connection(amqp_url, connect_timeout=5, heartbeat=0)
        self.channel = self.broker.channel()
        self.channel.queue_declare(queue=self.dead_letter_queue, durable=True, auto_delete=False)
        self.channel.queue_declare(
            queue=self.queue, durable=True, auto_delete=False,
            arguments=queue_arguments(self.dead_letter_queue),
        )  # fmt: skip
        self.sent = 0

    def die(self, letter: Letter) -> None:
        message = self.channel.prepare_message(
            letter.payload.encode(), content_type=letter.content_type,
            headers={**letter.headers, "x-system": letter.system},
            properties={
                "message_id": letter.message_id, "correlation_id": letter.correlation_id,
                "delivery_mode": 2,
            },
        )  # fmt: skip
        self.channel.basic_publish(message, exchange="", routing_key=self.queue)
        self._reject(letter.message_id)
        self.sent += 1

    def _reject(self, message_id: str) -> None:
        """Take messages until ours, reject it (dead-lettered), put the others back in order.

        Others may be waiting there: replays nobody consumed while `--targets` was not on.
        """
        held = []
        try:
            while (message := self.channel.basic_get(queue=self.queue, no_ack=False)) is not None:
                if message.properties.get("message_id") == message_id:
                    self.channel.basic_reject(message.delivery_tag, requeue=False)
                    return
                held.append(message)
        finally:
            for other in held:
                self.channel.basic_reject(other.delivery_tag, requeue=True)

    def close(self) -> None:
        self.broker.release()


class ApiDeadLetters:
    """Posts dead letters to Tideline, each naming the URL the message was going to."""

    def __init__(self, *, client: httpx.Client) -> None:
        self.client = client
        self.sent = 0

    def die(self, letter: Letter, *, url: str) -> None:
        document = {
            "system": letter.system, "transport": "http", "url": url,
            "message_id": letter.message_id, "correlation_id": letter.correlation_id,
            "payload": base64.b64encode(letter.payload.encode()).decode(), "payload_encoding": "base64",
            "content_type": letter.content_type, "headers": letter.headers, "error": letter.error,
            "attempts": ATTEMPTS, "first_failed_at": letter.first_failed_at.isoformat(),
            "last_failed_at": letter.last_failed_at.isoformat(),
        }  # fmt: skip
        for delay in (*RETRY_DELAYS, None):
            try:
                response = self.client.post("/ingest/v1/dead-letters", json=[document])
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                self.sent += 1
                return
            if response is not None and response.status_code not in (429, 502, 503, 504):
                raise RecordsRefused(f"HTTP {response.status_code}: {response.text[:500]}")
            if delay is None:
                raise RecordsRefused("Tideline did not take the dead letter after retries")
            time.sleep(delay)
