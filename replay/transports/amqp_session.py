"""The RabbitMQ connection a worker keeps from one replay to the next, its channel in
confirm mode, and what RabbitMQ confirmed, refused or returned on it.

Connecting and opening a channel for each message was most of an AMQP replay's time, and
waiting for each message's own confirm most of what was left: `amqp_publish` publishes a
group and then reads the confirms of all of it, matched here by their numbers.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from typing import Any

from amqp.exceptions import ChannelError
from kombu import Connection

from replay.transports.common import AMQP_ATTEMPT_HEADER


class Confirms:
    """RabbitMQ numbers the messages published on a confirming channel 1, 2, 3 … in the order
    it receives them; an ack or a nack names one number, or (`multiple`) every one up to it.
    A message no queue took comes back (basic.return, before its ack), named by its attempt."""

    def __init__(self) -> None:
        self.published = 0
        self.waiting: set[int] = set()
        self.acked: set[int] = set()
        self.nacked: set[int] = set()
        self.returned: dict[str, ChannelError] = {}

    def group_begins(self) -> None:
        self.acked, self.nacked, self.returned = set(), set(), {}

    def published_one(self) -> int:
        """The number RabbitMQ gives the message just written."""
        self.published += 1
        self.waiting.add(self.published)
        return self.published

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.acked |= self._settled(delivery_tag, multiple)

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked |= self._settled(delivery_tag, multiple)

    def on_return(self, error: ChannelError, exchange: str, routing_key: str, message: Any) -> None:
        attempt = (message.headers or {}).get(AMQP_ATTEMPT_HEADER)
        self.returned[str(attempt)] = error

    def _settled(self, delivery_tag: int, multiple: bool) -> set[int]:
        if multiple:
            settled = {number for number in self.waiting if number <= delivery_tag}
        else:
            settled = self.waiting & {delivery_tag}
        self.waiting -= settled
        return settled


class _Session(threading.local):
    """One confirming channel per thread of a process."""

    pid: int = 0
    key: tuple[str, float] | None = None
    broker: Connection | None = None
    channel: Any = None
    confirms: Confirms | None = None


_session = _Session()


def broker(url: str, timeout: float) -> Connection:
    """The kept connection to `url`, or a new one (not connected yet)."""
    if _session.pid != os.getpid():
        # After a fork the parent's connection is not ours to use, nor to close.
        _session.pid, _session.key, _session.broker = os.getpid(), None, None
        _session.channel, _session.confirms = None, None
    if _session.broker is None or _session.key != (url, timeout) or not _still_quiet():
        end()
        _session.key = (url, timeout)
        _session.broker = Connection(
            url, connect_timeout=timeout, heartbeat=0,
            transport_options={"read_timeout": timeout, "write_timeout": timeout},
        )  # fmt: skip
    return _session.broker


def confirming_channel(broker: Connection) -> tuple[Any, Confirms]:
    """The kept channel in confirm mode and its confirms; connects when there is none yet
    (raising the broker's errors when it cannot: then call `end`)."""
    if _session.channel is None or _session.confirms is None:
        broker.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        channel = broker.channel()
        channel.confirm_select()
        confirms = Confirms()
        channel.events["basic_ack"].add(confirms.on_ack)
        channel.events["basic_nack"].add(confirms.on_nack)
        channel.events["basic_return"].add(confirms.on_return)
        _session.channel, _session.confirms = channel, confirms
    return _session.channel, _session.confirms


def _still_quiet() -> bool:
    """Whether the kept connection may carry another message. Without heartbeats an idle
    AMQP connection hears nothing (every confirm of the last group was read), so anything to
    read is the broker closing it: a publish on it would be lost, and the replay called in
    doubt though nothing was sent."""
    if _session.channel is None or _session.broker is None:
        return True  # not connected yet
    try:
        sock = _session.broker.connection.transport.sock
        readable, _, _ = select.select([sock], [], [], 0)
    except (AttributeError, OSError, ValueError):
        return False
    return not readable


def end() -> None:
    """Close the kept connection: after an error, or with confirms still owed on it (the
    next group would wait for them too)."""
    broker, _session.key, _session.broker = _session.broker, None, None
    _session.channel, _session.confirms = None, None
    if broker is not None:
        with contextlib.suppress(*broker.connection_errors, *broker.channel_errors, OSError):
            broker.release()
