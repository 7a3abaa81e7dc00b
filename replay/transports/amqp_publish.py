"""A dead letter published again to RabbitMQ: mandatory, persistent, with publisher confirms."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from amqp.exceptions import ChannelError
from kombu import Connection

from replay.transports import amqp_session
from replay.transports.amqp_session import Confirms
from replay.transports.common import (
    AMQP_ATTEMPT_HEADER,
    DELIVERED,
    FAILED,
    IDEMPOTENCY_KEY,
    UNKNOWN,
    Delivery,
    DestinationInvalid,
    Outcome,
    broker_url_of,
    destination_url,
    host_port,
    in_seconds,
    in_words,
    ours_or_dead_lettering,
    path_segment,
    without_password,
)

AMQP_TO_EXCHANGE_WARNING = (
    "Publishing to the original exchange delivers a copy to every queue bound to it, not only "
    "to the one this message died in: every other subscriber receives it again."
)

# CC and BCC route a copy to more queues: a replay goes only where it is told.
_AMQP_NOT_FORWARDED = frozenset({"cc", "bcc"})
_AMQP_PROPERTIES = (
    "content_encoding", "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
    "type", "user_id", "app_id", "cluster_id", "priority",
)  # fmt: skip
# A header AMQP cannot carry (an integer past 64 bits, a type it has no field for): raised
# while the message is encoded, before any byte of it is written.
UNENCODABLE = (struct.error, TypeError, ValueError, OverflowError)
_BASIC_PUBLISH = (60, 40)  # the method a channel error names when a publish caused it


def deliver(delivery: Delivery, timeout: float) -> Outcome:
    return deliver_together([delivery], timeout)[0]


def deliver_together(deliveries: Sequence[Delivery], timeout: float) -> list[Outcome]:
    """Publish to one broker one message after another, then read RabbitMQ's confirms of
    them all: a group waits for the broker once, not once per message. Each message's outcome
    is still its own: confirmed, returned (no queue took it), nacked, or unknown when it left
    and no confirm came (it may have arrived). `timeout` bounds connecting, writing the group
    and waiting for its confirms, each."""
    url = broker_url_of(deliveries[0], "amqp")
    group = _Group(deliveries, host_port(urlsplit(url), default_port=None), timeout)
    while True:  # each round that finds a missing exchange settles the messages sent to it
        broker = amqp_session.broker(url, timeout)
        try:
            channel, confirms = amqp_session.confirming_channel(broker)
            missing = _exchange_missing(channel, group.exchanges())
            if missing is None:
                messages = group.messages(channel, broker.userid)
        except (*broker.connection_errors, *broker.channel_errors, OSError) as error:
            amqp_session.end()
            group.unsent(f"could not connect to {group.host}: {in_words(error)}; nothing was sent")
            return group.outcomes()
        if missing is None:
            break
        amqp_session.end()  # the refused declare closed the channel
        group.refused(*missing)
    lost = (*broker.connection_errors, OSError)
    group.publish(channel, confirms, messages, timeout=timeout, lost=lost)
    if not group.troubled:  # a closed channel or connection brings no more confirms
        group.confirms_wait(broker, confirms, timeout=timeout, lost=lost)
    if group.troubled or confirms.waiting:
        amqp_session.end()
    return group.outcomes()


def _exchange_missing(channel: Any, exchanges: set[str]) -> tuple[str, ChannelError] | None:
    """A named exchange that does not exist, found before anything is published: a publish
    to it would close the channel under the whole group, and leave unsaid which message it
    refused. (The default exchange always exists.)"""
    for exchange in sorted(exchanges - {""}):
        try:
            channel.exchange_declare(exchange, "direct", passive=True)
        except ChannelError as error:
            return exchange, error
    return None


class _Group:
    """The messages of one `deliver_together`, by their place in it, and what became of them."""

    def __init__(self, deliveries: Sequence[Delivery], host: str, timeout: float) -> None:
        self.deliveries, self.host, self.timeout = list(deliveries), host, timeout
        self.routes: dict[int, tuple[str, str]] = {}
        self.settled: dict[int, Outcome] = {}
        for n, delivery in enumerate(self.deliveries):
            try:
                self.routes[n] = _amqp_route(delivery.destination, delivery.amqp_to_exchange)
            except DestinationInvalid as invalid:
                self.settled[n] = Outcome(FAILED, f"{invalid} Nothing was sent.")
        self.numbers: dict[int, int] = {}  # a published message's number on the channel
        self.torn: int | None = None  # the message being written when the connection was lost
        self.closed: ChannelError | None = None  # RabbitMQ closed the channel
        self.lost: BaseException | None = None  # the connection was lost
        self.late: float | None = None  # writing the group outlasted this timeout
        self.confirms = Confirms()

    @property
    def troubled(self) -> bool:
        """The channel or the connection failed: no more confirms will come on it."""
        return bool(self.closed or self.lost)

    def exchanges(self) -> set[str]:
        return {self.routes[n][0] for n in self.open()}

    def open(self) -> list[int]:
        return [n for n in self.routes if n not in self.settled]

    def where(self, n: int) -> str:
        return _amqp_where(*self.routes[n])

    def unsent(self, why: str) -> None:
        for n in self.open():
            self.settled[n] = Outcome(FAILED, why)

    def refused(self, exchange: str, error: ChannelError) -> None:
        for n in self.open():
            if self.routes[n][0] == exchange:
                self.settled[n] = self._refusal(n, error)

    def messages(self, channel: Any, userid: str | None) -> dict[int, Any]:
        return {n: _message(channel, self.deliveries[n], userid) for n in self.open()}

    def publish(
        self, channel: Any, confirms: Confirms, messages: dict[int, Any], *, timeout: float,
        lost: tuple[type[BaseException], ...],
    ) -> None:  # fmt: skip
        """Write each message, mandatory: one no queue takes comes back instead of vanishing.
        Stops at the first trouble; the messages after it are not sent."""
        confirms.group_begins()
        self.confirms = confirms
        deadline = time.monotonic() + timeout
        for n in self.open():
            left = deadline - time.monotonic()
            if left <= 0:
                self.late = timeout
                return
            exchange, routing_key = self.routes[n]
            try:
                channel.basic_publish(
                    messages[n], exchange=exchange, routing_key=routing_key, mandatory=True,
                    timeout=left,
                )  # fmt: skip
            except ChannelError as error:  # over an earlier message: this one was not written
                self.closed = error
                return
            except UNENCODABLE as error:  # py-amqp encodes a message whole before writing it
                self.settled[n] = Outcome(
                    FAILED, f"not sent to {self.where(n)}: its headers cannot be encoded for "
                    f"AMQP ({error}); nothing was sent",
                )  # fmt: skip
                continue
            except lost as error:
                self.torn, self.lost = n, error
                return
            self.numbers[n] = confirms.published_one()

    def confirms_wait(
        self, broker: Connection, confirms: Confirms, *, timeout: float,
        lost: tuple[type[BaseException], ...],
    ) -> None:  # fmt: skip
        deadline = time.monotonic() + timeout
        while confirms.waiting and (left := deadline - time.monotonic()) > 0:
            try:
                broker.connection.drain_events(timeout=left)
            except TimeoutError:
                return
            except ChannelError as error:
                self.closed = error
                return
            except lost as error:
                self.lost = error
                return

    def outcomes(self) -> list[Outcome]:
        return [self.settled.get(n) or self._outcome(n) for n in range(len(self.deliveries))]

    def _outcome(self, n: int) -> Outcome:
        where, number, confirms = self.where(n), self.numbers.get(n), self.confirms
        if number is None:
            if n == self.torn:
                return self._lost(n)
            return Outcome(FAILED, f"not sent to {where}: {self._why_unsent()}; nothing was sent")
        returned = confirms.returned.get(self.deliveries[n].attempt_id)
        if returned is not None:
            return self._refusal(n, returned)
        if number in confirms.nacked:
            return Outcome(
                FAILED, f"RabbitMQ at {self.host} did not take it ({where}): it answered nack"
            )
        if number in confirms.acked:
            return Outcome(DELIVERED, f"published to {where} on {self.host}, confirmed by RabbitMQ")
        if self.closed is not None:
            return self._closed(n)
        if self.lost is not None:
            return self._lost(n)
        return Outcome(
            UNKNOWN,
            f"no confirm from RabbitMQ at {self.host} within {in_seconds(self.timeout)} "
            f"({where}); it may have taken the message",
        )

    def _closed(self, n: int) -> Outcome:
        """RabbitMQ closed the channel over a publish: when this is the only message it had
        not confirmed, it is the one refused; otherwise which one is not said."""
        closed = self.closed
        assert closed is not None
        returned = self.confirms.returned
        unconfirmed = [
            m
            for m, number in self.numbers.items()
            if number in self.confirms.waiting and self.deliveries[m].attempt_id not in returned
        ]
        if closed.method_sig == _BASIC_PUBLISH and unconfirmed == [n]:
            return self._refusal(n, closed)
        return Outcome(
            UNKNOWN,
            f"RabbitMQ at {self.host} closed the channel before it confirmed ({self.where(n)}): "
            f"{_amqp_refusal(closed)}; it may have taken the message",
        )

    def _lost(self, n: int) -> Outcome:
        return Outcome(
            UNKNOWN,
            f"lost the connection to RabbitMQ at {self.host} before it confirmed "
            f"({self.where(n)}): {in_words(self.lost or OSError())}; it may have taken the message",
        )

    def _refusal(self, n: int, error: ChannelError) -> Outcome:
        return Outcome(
            FAILED, f"RabbitMQ at {self.host} refused it ({self.where(n)}): {_amqp_refusal(error)}"
        )

    def _why_unsent(self) -> str:
        if self.closed is not None:
            return (
                f"RabbitMQ at {self.host} closed the channel over another message of its group "
                f"({_amqp_refusal(self.closed)})"
            )
        if self.lost is not None:
            return f"lost the connection to RabbitMQ at {self.host}: {in_words(self.lost)}"
        return f"writing its group took longer than {in_seconds(self.late or 0)}"


def _message(channel: Any, delivery: Delivery, userid: str | None) -> Any:
    properties = _amqp_properties(delivery, userid=userid)
    return channel.prepare_message(
        delivery.payload,
        priority=properties.pop("priority", None),
        content_type=properties.pop("content_type", None),
        content_encoding=properties.pop("content_encoding", None),
        headers=_amqp_headers(delivery),
        properties=properties,
    )


def preview(delivery: Delivery) -> dict[str, Any]:
    """The publish `deliver` would make, for the dry run."""
    exchange, routing_key = _amqp_route(delivery.destination, delivery.amqp_to_exchange)
    target: dict[str, Any] = {
        "broker": without_password(broker_url_of(delivery, "amqp")),
        "exchange": exchange,
        "routing_key": routing_key,
        "mandatory": True,
        "properties": _amqp_properties(delivery, userid=None),
        "headers": _amqp_headers(delivery),
    }
    if delivery.amqp_to_exchange:
        target["warning"] = AMQP_TO_EXCHANGE_WARNING
    return target


def address(destination: dict[str, Any], broker_url: str, to_exchange: bool) -> str:
    url = urlsplit(destination_url(destination, broker_url, "amqp"))
    scheme = "amqps" if url.scheme in ("amqps", "pyamqps") else "amqp"
    host = host_port(url, default_port=5671 if scheme == "amqps" else 5672)
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    exchange, routing_key = _amqp_route(destination, to_exchange)
    if exchange == "":  # the default exchange delivers to the queue its routing key names
        return f"{scheme}://{host}/{path_segment(vhost)}/queue/{path_segment(routing_key)}"
    return f"{scheme}://{host}/{path_segment(vhost)}/exchange/{path_segment(exchange)}"


def _amqp_refusal(error: ChannelError) -> str:
    text = f"{error.reply_text} ({error.reply_code})"
    if error.reply_code == 312:  # NO_ROUTE
        return f"{text}: no queue took it; does the queue exist and is it bound?"
    return text


def _amqp_where(exchange: str, routing_key: str) -> str:
    if exchange == "":
        return f"queue {routing_key}"
    return f"exchange {exchange} with routing key {routing_key!r}"


def _amqp_route(destination: dict[str, Any], to_exchange: bool) -> tuple[str, str]:
    """(exchange, routing key): the default exchange to the queue it died in, unless told."""
    if to_exchange:
        exchange = destination.get("exchange")
        if not isinstance(exchange, str):
            raise DestinationInvalid("The destination names no exchange to publish to.")
        return exchange, str(destination.get("routing_key") or "")
    queue = destination.get("queue")
    if not isinstance(queue, str) or not queue:
        raise DestinationInvalid(
            "The dead letter does not say which queue it died in; publish to its original "
            "exchange instead, if a copy to every queue bound to it is acceptable."
        )
    return "", queue


def _amqp_headers(delivery: Delivery) -> dict[str, Any]:
    headers = {
        name: value
        for name, value in delivery.headers.items()
        if name.lower() not in _AMQP_NOT_FORWARDED and not ours_or_dead_lettering(name)
    }
    headers[IDEMPOTENCY_KEY] = delivery.idempotency_key
    headers[AMQP_ATTEMPT_HEADER] = delivery.attempt_id
    return headers


def _amqp_properties(delivery: Delivery, *, userid: str | None) -> dict[str, Any]:
    """The message's properties as stored, persistent, with its own ID and content type.

    user_id is kept only when it is the user Tideline connects as (RabbitMQ refuses any
    other); `userid` None (a dry run, not connected) keeps it.
    """
    stored = delivery.properties
    properties = {
        name: stored[name] for name in _AMQP_PROPERTIES if stored.get(name) not in (None, "")
    }
    # As AMQP types: a value of the wrong type would fail the publish, not just this property.
    for name, value in properties.items():
        if name == "timestamp":
            properties[name] = _timestamp(value)
        elif name == "priority":
            properties[name] = value if type(value) is int and 0 <= value <= 255 else None
        else:
            properties[name] = str(value)
    if userid is not None and properties.get("user_id") != userid:
        properties.pop("user_id", None)
    if delivery.message_id:
        properties["message_id"] = delivery.message_id
    if delivery.correlation_id:
        properties["correlation_id"] = delivery.correlation_id
    if delivery.content_type:
        properties["content_type"] = delivery.content_type
    properties["delivery_mode"] = 2  # persistent
    return {name: value for name, value in properties.items() if value is not None}


def _timestamp(value: Any) -> int | None:
    """A stored timestamp (seconds since 1970, or ISO text) as AMQP's: whole seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(value)
            return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    return None
