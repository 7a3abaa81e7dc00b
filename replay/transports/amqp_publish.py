"""A dead letter published again to RabbitMQ: mandatory, persistent, with publisher confirms."""

from __future__ import annotations

import contextlib
import os
import select
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from amqp.exceptions import ChannelError, MessageNacked
from kombu import Connection

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


def deliver(delivery: Delivery, timeout: float) -> Outcome:
    exchange, routing_key = _amqp_route(delivery.destination, delivery.amqp_to_exchange)
    url = broker_url_of(delivery, "amqp")
    host = host_port(urlsplit(url), default_port=None)
    broker = _broker(url, timeout)
    broker_errors = (*broker.connection_errors, *broker.channel_errors, OSError)
    try:
        channel = _channel(broker)
        properties = _amqp_properties(delivery, userid=broker.userid)
        message = channel.prepare_message(
            delivery.payload,
            priority=properties.pop("priority", None),
            content_type=properties.pop("content_type", None),
            content_encoding=properties.pop("content_encoding", None),
            headers=_amqp_headers(delivery),
            properties=properties,
        )
    except broker_errors as error:
        _session_end()
        return Outcome(FAILED, f"could not connect to {host}: {in_words(error)}; nothing was sent")
    outcome = _amqp_publish(
        channel, message, exchange, routing_key, timeout=timeout, host=host,
        lost=(*broker.connection_errors, OSError),
    )  # fmt: skip
    if outcome.state != DELIVERED:
        # A returned, refused or unconfirmed message can leave the broker's confirm for it
        # unread on the channel, where the next publish would take it for its own.
        _session_end()
    return outcome


class _Session(threading.local):
    """One confirming channel per thread of a process, kept from one replay to the next:
    connecting and opening a channel for each message was most of an AMQP replay's time."""

    pid: int = 0
    key: tuple[str, float] | None = None
    broker: Connection | None = None
    channel: Any = None


_session = _Session()


def _broker(url: str, timeout: float) -> Connection:
    if _session.pid != os.getpid():
        # After a fork the parent's connection is not ours to use, nor to close.
        _session.pid, _session.key, _session.broker, _session.channel = (
            os.getpid(),
            None,
            None,
            None,
        )
    if _session.broker is None or _session.key != (url, timeout) or not _still_quiet():
        _session_end()
        _session.key = (url, timeout)
        _session.broker = Connection(
            url, connect_timeout=timeout, heartbeat=0,
            transport_options={"confirm_publish": True, "read_timeout": timeout, "write_timeout": timeout},
        )  # fmt: skip
    return _session.broker


def _channel(broker: Connection) -> Any:
    if _session.channel is None:
        broker.ensure_connection(max_retries=0, reraise_as_library_errors=False)
        _session.channel = broker.channel()
    return _session.channel


def _still_quiet() -> bool:
    """Whether the kept connection may carry another message. Without heartbeats an idle
    AMQP connection hears nothing, so anything to read is the broker closing it: a publish
    on it would be lost, and the replay called in doubt though nothing was sent."""
    if _session.channel is None or _session.broker is None:
        return True  # not connected yet
    try:
        sock = _session.broker.connection.transport.sock
        readable, _, _ = select.select([sock], [], [], 0)
    except (AttributeError, OSError, ValueError):
        return False
    return not readable


def _session_end() -> None:
    broker, _session.key, _session.broker, _session.channel = _session.broker, None, None, None
    if broker is not None:
        with contextlib.suppress(*broker.connection_errors, *broker.channel_errors, OSError):
            broker.release()


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


def _amqp_publish(
    channel: Any,
    message: Any,
    exchange: str,
    routing_key: str,
    *,
    timeout: float,
    host: str,
    lost: tuple[type[BaseException], ...],
) -> Outcome:
    where = _amqp_where(exchange, routing_key)
    # mandatory: a message no queue takes comes back (basic.return) instead of vanishing.
    try:
        channel.basic_publish(
            message, exchange=exchange, routing_key=routing_key, mandatory=True,
            timeout=timeout, confirm_timeout=timeout,
        )  # fmt: skip
    except ChannelError as error:
        return Outcome(FAILED, f"RabbitMQ at {host} refused it ({where}): {_amqp_refusal(error)}")
    except MessageNacked:
        return Outcome(FAILED, f"RabbitMQ at {host} did not take it ({where}): it answered nack")
    except TimeoutError:
        return Outcome(
            UNKNOWN,
            f"no confirm from RabbitMQ at {host} within {in_seconds(timeout)} ({where}); "
            "it may have taken the message",
        )
    except lost as error:
        return Outcome(
            UNKNOWN,
            f"lost the connection to RabbitMQ at {host} before it confirmed ({where}): "
            f"{in_words(error)}; it may have taken the message",
        )
    return Outcome(DELIVERED, f"published to {where} on {host}, confirmed by RabbitMQ")


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
