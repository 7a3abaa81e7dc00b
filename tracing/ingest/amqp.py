"""Dead letters from RabbitMQ dead-letter queues, for `manage.py consume_dead_letters`.

RabbitMQ says how a message died in its `x-death` header. Each message becomes the dead
letter the API takes and is stored through the same service, a batch per transaction. A
message is acked only after the transaction that stored it has committed: a consumer
killed at any moment loses nothing (RabbitMQ delivers unacked messages again) and stores
nothing twice (a message delivered again reports the same death, which the service knows).
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from amqp.basic_message import Message
from django.db import (
    DataError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.utils import timezone
from kombu import Connection

from tracing.ingest import metrics
from tracing.ingest.activity import sender_activity_count
from tracing.ingest.dead_letters import DeadLetterRow, dead_letters_parse
from tracing.ingest.records import RecordsInvalid
from tracing.ingest.services import StoredDeadLetters, dead_letters_store

log = logging.getLogger(__name__)

SOURCE = "amqp"
STREAM = "dead_letters"
# How often a quiet consumer looks up to notice SIGTERM and --idle-exit.
IDLE_POLL_SECONDS = 1.0
# A batch is what arrives within this long of its first message: a trickle is stored
# promptly, a backlog in batches of --batch.
BATCH_FILL_SECONDS = 0.2
# Waits between attempts while PostgreSQL or RabbitMQ is away; the last one repeats forever.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# RabbitMQ's account of the deaths goes to x_death, not into the headers a replay sends.
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")
_SENTENCES = {
    "rejected": "rejected by a consumer of {source} (queue {queue})",
    "expired": "expired in queue {queue} before a consumer took it",
    "maxlen": "dropped from queue {queue}, which was full (maxlen)",
    "delivery_limit": "dropped from queue {queue} after too many deliveries (delivery_limit)",
}


class DeadLetterQueueUnusable(Exception):
    """RabbitMQ cannot be reached at start, or will not let us consume a queue."""


@dataclass(frozen=True)
class ConsumerOptions:
    amqp_url: str
    queues: list[str]
    sender: str = "rabbitmq"
    system: str | None = None
    batch_size: int = 100
    idle_exit: float | None = None


@dataclass
class ConsumedTotals:
    created: int = 0
    reopened: int = 0
    duplicates: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Arrival:
    """A message taken from a dead-letter queue, not yet acked."""

    queue: str
    message: Message


@dataclass(frozen=True)
class Letter:
    """An arrival the service accepts as a dead letter, to store and then ack."""

    arrival: Arrival
    row: DeadLetterRow


def dead_letter_document(message: Message, *, queue: str, system: str | None) -> dict[str, Any]:
    """The dead letter the service takes, from a message RabbitMQ dead-lettered into `queue`."""
    headers = message.headers or {}
    properties = message.properties
    deaths = _deaths(headers)
    death = deaths[0] if deaths else {}  # RabbitMQ puts the most recent death first
    return {
        "system": _text(headers.get("x-system")) or system or queue,
        "transport": "amqp",
        **_destination(death),
        "message_id": _text(properties.get("message_id")) or None,
        "correlation_id": _text(properties.get("correlation_id"))
        or _text(headers.get("correlation.id"))
        or None,
        "headers": {
            _text(name): _json_safe(value)
            for name, value in headers.items()
            if not _text(name).startswith(_DEATH_HEADERS)
        },
        "properties": {
            name: _json_safe(value)
            for name, value in properties.items()
            if name not in _KEPT_ELSEWHERE
        },
        "payload": base64.b64encode(_body(message)).decode("ascii"),
        "payload_encoding": "base64",
        "content_type": _text(properties.get("content_type")),
        "error": death_sentence(death),
        "attempts": death.get("count", 0),
        "last_failed_at": death.get("time"),
        "x_death": deaths,
    }


# Properties that have fields of their own in a dead letter (headers are application_headers).
_KEPT_ELSEWHERE = frozenset({"application_headers", "content_type", "message_id", "correlation_id"})


def _deaths(headers: dict[str, Any]) -> list[dict[str, Any]]:
    """The x-death entries, JSON-safe, most recent first; [] if there are none.

    A header that is not a list of tables did not come from RabbitMQ: it counts as none.
    """
    deaths = _json_safe(headers.get("x-death"))
    if isinstance(deaths, list) and all(isinstance(death, dict) for death in deaths):
        return deaths
    return []


def _body(message: Message) -> bytes:
    # py-amqp hands over an empty body as "", every other as bytes.
    return message.body if isinstance(message.body, bytes) else message.body.encode()


def death_sentence(death: dict[str, Any]) -> str:
    """What happened, in words support can repeat: the x-death reason and where."""
    if not death:
        return ""
    reason, queue = death.get("reason", ""), death.get("queue", "")
    routing_keys = death.get("routing-keys") or [""]
    source = death.get("exchange") or routing_keys[0]
    sentence = _SENTENCES.get(reason, "dead-lettered from queue {queue} ({reason})")
    return sentence.format(source=source, queue=queue, reason=reason)


def _destination(death: dict[str, Any]) -> dict[str, Any]:
    """Where the message was going when it died, for a replay to send it there again."""
    routing_keys = death.get("routing-keys") or []
    return {
        "exchange": death.get("exchange"),  # "" is the default exchange, still a destination
        "routing_key": routing_keys[0] if routing_keys else None,
        "queue": death.get("queue") or None,
    }


def _json_safe(value: Any) -> Any:
    """AMQP field values as JSON: timestamps, byte strings and decimals have no JSON type."""
    if isinstance(value, dict):
        return {_text(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, datetime):
        # py-amqp reads AMQP timestamps (whole seconds, UTC) as naive datetimes.
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, bytes | bytearray | memoryview | Decimal):
        return _text(value)
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        # Not UTF-8 (py-amqp hands those over as bytes): keep every byte visible.
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _retry_delays() -> Iterator[float]:
    return itertools.chain(RETRY_DELAYS, itertools.repeat(RETRY_DELAYS[-1]))


class DeadLetterConsumer:
    """Consumes dead-letter queues until stopped, or until idle for `idle_exit` seconds.

    Messages are consumed raw (py-amqp's messages on a kombu connection), not through
    kombu.Consumer: kombu's messages inflate a body whose headers name a `compression`, and
    raise on one that fails to, so a Celery message would be kept inflated under a header
    saying it is compressed, and a damaged one would stop the consumer at every delivery.
    """

    def __init__(self, options: ConsumerOptions) -> None:
        self.options = options
        self.totals = ConsumedTotals()
        self._pending: list[Arrival] = []
        self._stopping = False
        self._last_arrival = time.monotonic()
        self._reconnect_delays = _retry_delays()
        self._consumed_before = False

    def stop(self) -> None:
        """Stop after the current batch (SIGTERM, SIGINT). Only sets a flag: signal-safe."""
        self._stopping = True

    def run(self) -> ConsumedTotals:
        if connection.in_atomic_block:
            raise RuntimeError(
                "Dead letters are acked once their own transaction commits; "
                "do not consume them inside another transaction."
            )
        broker_errors = self._broker_errors()
        while not self._finished():
            try:
                self._session()
            except broker_errors as error:
                self._broker_lost(error)
        return self.totals

    def _broker_errors(self) -> tuple[type[BaseException], ...]:
        probe = Connection(self.options.amqp_url)  # no I/O: the transport's error classes
        return (*probe.connection_errors, *probe.channel_errors)

    def _finished(self) -> bool:
        return self._stopping or self._idle_too_long()

    def _idle_too_long(self) -> bool:
        idle_exit = self.options.idle_exit
        return idle_exit is not None and time.monotonic() - self._last_arrival >= idle_exit

    def _broker_lost(self, error: BaseException) -> None:
        delay = next(self._reconnect_delays)
        log.warning(
            "dead letters: lost RabbitMQ; unacked messages will be delivered again",
            extra={"error": str(error), "retry_in_seconds": delay},
        )
        self._pause(delay)

    def _session(self) -> None:
        """One connection: consume until finished; a lost connection raises a broker error."""
        # No AMQP heartbeats: a batch may wait minutes for PostgreSQL, when py-amqp would not
        # send them; its TCP keepalive notices a broker that has gone.
        with Connection(self.options.amqp_url, connect_timeout=10, heartbeat=0) as broker:
            if not self._consumed_before:
                self._connect_first(broker)
            channel = broker.channel()
            try:
                self._consumers_start(broker, channel)
                while not self._finished():
                    self._batch_fill(broker)
                    if self._pending:
                        self._batch_settle()
            finally:
                self._pending.clear()  # unacked: RabbitMQ delivers them again
                broker.maybe_close_channel(channel)

    def _connect_first(self, broker: Connection) -> None:
        # At start a wrong URL or password is a mistake to report, not an outage to wait out.
        try:
            broker.connect()
        except (*broker.connection_errors, *broker.channel_errors) as error:
            raise DeadLetterQueueUnusable(
                f"Cannot reach RabbitMQ at {broker.as_uri()}: {error}"
            ) from None

    def _consumers_start(self, broker: Connection, channel: Any) -> None:
        # Prefetch per consumer, not per channel: quorum queues refuse a channel-wide one.
        channel.basic_qos(prefetch_size=0, prefetch_count=self.options.batch_size, a_global=False)
        for queue in self.options.queues:
            try:
                channel.basic_consume(queue=queue, callback=partial(self._arrived, queue))
            except broker.channel_errors as error:
                raise DeadLetterQueueUnusable(
                    f"Cannot consume dead-letter queue {queue!r} at {broker.as_uri()}: {error}"
                ) from None
        self._consumed_before = True
        self._reconnect_delays = _retry_delays()
        log.info(
            "dead letters: consuming",
            extra={
                "queues": self.options.queues,
                "broker": broker.as_uri(),
                "sender": self.options.sender,
            },
        )

    def _arrived(self, queue: str, message: Message) -> None:
        self._pending.append(Arrival(queue=queue, message=message))
        self._last_arrival = time.monotonic()

    def _batch_fill(self, broker: Connection) -> None:
        """Take what RabbitMQ has, up to one batch; a batch closes when no more arrive quickly."""
        closes_at: float | None = None
        while len(self._pending) < self.options.batch_size and not self._stopping:
            if self._pending and closes_at is None:
                closes_at = time.monotonic() + BATCH_FILL_SECONDS
            timeout = IDLE_POLL_SECONDS if closes_at is None else closes_at - time.monotonic()
            if timeout <= 0:
                return
            try:
                broker.drain_events(timeout=timeout)
            except TimeoutError:
                return

    def _batch_settle(self) -> None:
        """Store the batch, then ack it: a message is acked only once its row is committed."""
        arrivals, self._pending = self._pending, []
        received_at = timezone.now()
        letters = [
            letter for arrival in arrivals if (letter := self._letter_read(arrival, received_at))
        ]
        for letter in self._letters_store(letters, received_at) or []:
            message = letter.arrival.message
            message.channel.basic_ack(message.delivery_tag)

    def _letter_read(self, arrival: Arrival, received_at: datetime) -> Letter | None:
        """Validate as the API would; a message the service refuses is rejected at once."""
        document = dead_letter_document(
            arrival.message, queue=arrival.queue, system=self.options.system
        )
        try:
            (row,) = dead_letters_parse([document], token=None, received_at=received_at)
        except RecordsInvalid as invalid:
            (problem,) = invalid.problems
            self._refuse(arrival, field=problem.field, problem=problem.message)
            return None
        return Letter(arrival=arrival, row=row)

    def _refuse(self, arrival: Arrival, *, field: str, problem: str) -> None:
        # Requeued, the message would come straight back, forever, and hold up every batch
        # behind it. Rejected, it goes to this queue's own dead-letter exchange if the
        # operator gave it one (a parking queue, to inspect it); else RabbitMQ drops it and
        # this line is what remains of it. The payload is never logged.
        message = arrival.message
        log.error(
            "dead letters: message refused, rejected without requeue",
            extra={
                "queue": arrival.queue,
                "message_id": _text(message.properties.get("message_id")),
                "delivery_tag": message.delivery_tag,
                "field": field,
                "problem": problem,
                "sender": self.options.sender,
            },
        )
        message.channel.basic_reject(message.delivery_tag, requeue=False)
        self.totals.refused += 1
        metrics.REJECTED.labels(STREAM, self.options.sender, "invalid").inc()

    def _letters_store(self, letters: list[Letter], received_at: datetime) -> list[Letter] | None:
        """The letters stored (to ack), or None when asked to stop while PostgreSQL was away."""
        if not letters:
            return letters
        try:
            stored = self._store_waiting([letter.row for letter in letters], received_at)
        except DataError:
            # PostgreSQL refuses a value of one message (a NUL character in a header, say):
            # store one by one, so only that message is refused and the rest go through.
            return self._letters_store_one_by_one(letters, received_at)
        return letters if stored else None

    def _letters_store_one_by_one(
        self, letters: list[Letter], received_at: datetime
    ) -> list[Letter] | None:
        stored = []
        for letter in letters:
            try:
                if not self._store_waiting([letter.row], received_at):
                    return None
            except DataError as error:
                self._refuse(letter.arrival, field="", problem=str(error).splitlines()[0])
                continue
            stored.append(letter)
        return stored

    def _store_waiting(self, rows: list[DeadLetterRow], received_at: datetime) -> bool:
        """Store, waiting out a PostgreSQL outage with nothing acked; False if asked to stop."""
        delays = _retry_delays()
        while True:
            close_old_connections()  # as a request would: drop a connection that broke idle
            try:
                stored = dead_letters_store(
                    rows=rows, sender=self.options.sender, source=SOURCE, received_at=received_at
                )
            except (OperationalError, InterfaceError) as error:
                delay = next(delays)
                log.warning(
                    "dead letters: cannot store; nothing acked, retrying",
                    extra={"error": str(error).strip(), "retry_in_seconds": delay},
                )
                if not self._pause(delay):
                    return False
                continue
            self._count(stored)
            return True

    def _count(self, stored: StoredDeadLetters) -> None:
        self.totals.created += stored.created
        self.totals.reopened += stored.reopened
        self.totals.duplicates += stored.duplicates
        metrics.ACCEPTED.labels(STREAM, self.options.sender).inc(stored.created + stored.reopened)
        metrics.DUPLICATES.labels(STREAM, self.options.sender).inc(stored.duplicates)
        sender_activity_count(
            sender=self.options.sender, stream="dead_letters",
            accepted=stored.created + stored.reopened, at=timezone.now(),
        )  # fmt: skip

    def _pause(self, seconds: float) -> bool:
        """Sleep, in short steps so a stop is noticed; False if asked to stop."""
        until = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < until:
            time.sleep(min(0.1, max(0.0, until - time.monotonic())))
        return not self._stopping
