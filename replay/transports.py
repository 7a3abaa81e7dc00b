"""Sending a dead letter again over its own transport, and saying what became of it.

Pure of models: the replay service builds a `Delivery` from the attempt and its dead letter,
`deliver` sends it once (never retries: a retry is the operator's decision) and answers an
`Outcome`. The outcome is "unknown" whenever the target may have received the message
(a timeout or a lost connection after the message left), so the caller marks it in doubt
instead of sending it again.

`destination_address` gives one string per destination for the allow-list, never with
credentials; allow-list entries are prefixes, so they should end with "/":

- http:  ``http://wms.internal/in`` (the URL as it will be requested: host lower-cased, dot
  segments resolved, default port dropped; no user info, query or fragment)
- amqp:  ``amqp://broker-host[:port]/<vhost>/queue/<queue>`` for a replay to the queue the
  message died in (the default), ``amqp://broker-host[:port]/<vhost>/exchange/<exchange>`` for
  one to the original exchange; the default vhost "/" is ``%2F``; ``amqps`` over TLS
- redis: ``redis://host[:port]/<db>/stream/<stream>`` (``rediss`` over TLS,
  ``redis+socket:///path/to/redis.sock/<db>/stream/<stream>`` on a unix socket)

Names inside an address are percent-encoded ("/" as %2F), so no name can pass for a path.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import redis
from amqp.exceptions import ChannelError, MessageNacked
from kombu import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry

DELIVERED, FAILED, UNKNOWN = "delivered", "failed", "unknown"

IDEMPOTENCY_KEY = "Idempotency-Key"
HTTP_ATTEMPT_HEADER = "X-Tideline-Replay-Attempt"
HTTP_MESSAGE_ID_HEADER = "X-Message-Id"
AMQP_ATTEMPT_HEADER = "x-tideline-replay-attempt"
REDIS_ATTEMPT_FIELD = "replay_attempt"

AMQP_TO_EXCHANGE_WARNING = (
    "Publishing to the original exchange delivers a copy to every queue bound to it, not only "
    "to the one this message died in: every other subscriber receives it again."
)

# RabbitMQ's account of the message's deaths, and of its deliveries on a quorum queue.
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_OURS = frozenset(
    name.lower() for name in (IDEMPOTENCY_KEY, HTTP_ATTEMPT_HEADER, AMQP_ATTEMPT_HEADER)
)
# Hop-by-hop headers belong to the original connection; httpx sets Host and Content-Length.
_HTTP_NOT_FORWARDED = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
        "expect", "content-length", "host",
    }
)  # fmt: skip
# CC and BCC route a copy to more queues: a replay goes only where it is told.
_AMQP_NOT_FORWARDED = frozenset({"cc", "bcc"})
_AMQP_PROPERTIES = (
    "content_encoding", "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
    "type", "user_id", "app_id", "cluster_id", "priority",
)  # fmt: skip


@dataclass(frozen=True)
class Delivery:
    transport: str  # "http" | "amqp" | "redis"
    destination: dict[str, Any]  # as stored on the dead letter, or a redirect of the same shape
    payload: bytes  # exactly the bytes to send
    content_type: str
    headers: dict[str, Any]  # the original headers; dead-lettering ones are stripped here
    properties: dict[str, Any]  # AMQP properties as stored
    message_id: str
    idempotency_key: str  # stable per dead letter and payload version
    attempt_id: str  # this attempt's own ID
    broker_url: str  # amqp:// or redis:// to use when the destination names no "url"
    # Publish to the original exchange (a copy to every queue bound to it) instead of the
    # queue the message died in: see AMQP_TO_EXCHANGE_WARNING.
    amqp_to_exchange: bool = False
    # The dead letter's correlation ID: the dead-letter consumer keeps the AMQP property
    # there, not among `properties`; sent as the correlation_id property when set.
    correlation_id: str = ""


@dataclass(frozen=True)
class Outcome:
    state: str  # "delivered" | "failed" | "unknown" (the target may have received it)
    detail: str  # words for the operator
    status: int | None = None  # the HTTP status, when there is one


class DestinationInvalid(ValueError):
    """The destination cannot be sent to as it stands (no URL, no queue, a wrong scheme)."""


def deliver(delivery: Delivery, *, timeout: float) -> Outcome:
    """Send once; `timeout` (seconds) bounds connecting and each wait for the other side."""
    try:
        if delivery.transport == "http":
            return _http_deliver(delivery, timeout)
        if delivery.transport == "amqp":
            return _amqp_deliver(delivery, timeout)
        if delivery.transport == "redis":
            return _redis_deliver(delivery, timeout)
        raise DestinationInvalid(f"Tideline cannot send over {delivery.transport!r}.")
    except DestinationInvalid as invalid:
        return Outcome(FAILED, f"{invalid} Nothing was sent.")


def request_preview(delivery: Delivery) -> dict[str, Any]:
    """The dry run: what `deliver` would send, nothing sent. Raises DestinationInvalid."""
    address = _delivery_address(delivery)
    if delivery.transport == "http":
        request = _http_request(delivery)
        target: dict[str, Any] = {
            "method": request.method,
            "url": _without_password(str(request.url)),
            "headers": _joined(request.headers.raw),
        }
    elif delivery.transport == "amqp":
        exchange, routing_key = _amqp_route(delivery.destination, delivery.amqp_to_exchange)
        target = {
            "broker": _without_password(_broker_url(delivery, "amqp")),
            "exchange": exchange,
            "routing_key": routing_key,
            "mandatory": True,
            "properties": _amqp_properties(delivery, userid=None),
            "headers": _amqp_headers(delivery),
        }
        if delivery.amqp_to_exchange:
            target["warning"] = AMQP_TO_EXCHANGE_WARNING
    else:
        fields = _redis_fields(delivery)
        del fields["payload"]
        target = {
            "redis": _without_password(_broker_url(delivery, "redis")),
            "stream": _text_field(delivery.destination, "stream"),
            "fields": fields,
        }
    return {"transport": delivery.transport, "address": address, **target, **_body(delivery)}


def destination_address(
    transport: str, destination: dict[str, Any], broker_url: str, *, amqp_to_exchange: bool = False
) -> str:
    """Where a replay goes, as one string for allow-list checks (forms: the module's doc).

    Pass `amqp_to_exchange` as the delivery will: the exchange is then the destination.
    Raises DestinationInvalid when there is nowhere to send to.
    """
    if transport == "http":
        url = _http_url(_text_field(destination, "url"))
        return str(url.copy_with(username=None, password=None, query=None, fragment=None))
    if transport == "amqp":
        return _amqp_address(destination, broker_url, amqp_to_exchange)
    if transport == "redis":
        return _redis_address(destination, broker_url)
    raise DestinationInvalid(f"Tideline cannot send over {transport!r}.")


def _delivery_address(delivery: Delivery) -> str:
    return destination_address(
        delivery.transport,
        delivery.destination,
        delivery.broker_url,
        amqp_to_exchange=delivery.amqp_to_exchange,
    )


# --- HTTP ---------------------------------------------------------------------------------


def _http_deliver(delivery: Delivery, timeout: float) -> Outcome:
    request = _http_request(delivery)
    host = request.url.netloc.decode("ascii")
    seconds = _seconds(timeout)
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False) as client:
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectTimeout:
            return Outcome(
                FAILED, f"timed out after {seconds} connecting to {host}; nothing was sent"
            )
        except (httpx.ConnectError, httpx.ProxyError) as error:
            return Outcome(
                FAILED, f"could not connect to {host}: {_words(error)}; nothing was sent"
            )
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.PoolTimeout) as error:
            return Outcome(FAILED, f"could not send to {host}: {_words(error)}; nothing was sent")
        except httpx.ReadTimeout:
            return Outcome(
                UNKNOWN,
                f"timed out after {seconds} waiting for the answer from {host}; "
                "it may have received the message",
            )
        except httpx.WriteTimeout:
            return Outcome(
                UNKNOWN,
                f"timed out after {seconds} sending to {host}; "
                "it may have received part or all of the message",
            )
        except httpx.TransportError as error:
            return Outcome(
                UNKNOWN,
                f"{host} closed the connection without answering ({_words(error)}); "
                "it may have received the message",
            )
        with contextlib.closing(response):
            return _http_outcome(response, host)


def _http_outcome(response: httpx.Response, host: str) -> Outcome:
    status = response.status_code
    reason = response.reason_phrase or _status_phrase(status)
    detail = f"HTTP {status} from {host}: {reason}"
    if 200 <= status < 300:
        return Outcome(DELIVERED, detail, status)
    if 300 <= status < 400:
        detail += f"; redirect to {response.headers.get('location', '(no location)')} not followed"
    elif excerpt := _answer_excerpt(response):
        detail += f" — {excerpt}"
    return Outcome(FAILED, detail, status)


def _answer_excerpt(response: httpx.Response, limit: int = 200) -> str:
    """The start of the target's answer (its error message), on one line."""
    received = b""
    try:
        for chunk in response.iter_bytes():
            received += chunk
            if len(received) > limit * 4:
                break
    except httpx.HTTPError:
        pass  # the status already says it failed; the words are a bonus
    text = " ".join(received.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "…"


def _http_request(delivery: Delivery) -> httpx.Request:
    url = _http_url(_text_field(delivery.destination, "url"))
    return httpx.Request("POST", url, headers=_http_headers(delivery), content=delivery.payload)


def _http_url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as error:
        raise DestinationInvalid(f"The URL {text!r} is not valid: {error}.") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise DestinationInvalid(f"The URL {text!r} is not an http:// or https:// URL.")
    return url


def _http_headers(delivery: Delivery) -> list[tuple[bytes, bytes]]:
    """The original headers that belong to the message, then ours; as UTF-8, as sent."""
    not_forwarded = _HTTP_NOT_FORWARDED | _connection_named(delivery.headers)
    if delivery.content_type:
        not_forwarded |= {"content-type"}
    headers = [
        (name, value)
        for name, values in delivery.headers.items()
        if name.lower() not in not_forwarded and not _ours_or_dead_lettering(name)
        for value in _header_values(values)
    ]
    if delivery.content_type:
        headers.append(("Content-Type", delivery.content_type))
    headers += [
        (IDEMPOTENCY_KEY, delivery.idempotency_key),
        (HTTP_ATTEMPT_HEADER, delivery.attempt_id),
    ]
    has_message_id = any(name.lower() == HTTP_MESSAGE_ID_HEADER.lower() for name, _ in headers)
    if delivery.message_id and not has_message_id:
        headers.append((HTTP_MESSAGE_ID_HEADER, delivery.message_id))
    return [(name.encode(), value.encode()) for name, value in headers]


def _connection_named(headers: dict[str, Any]) -> set[str]:
    """Headers the original Connection header declared hop-by-hop (RFC 9110, 7.6.1)."""
    return {
        token.strip().lower()
        for name, values in headers.items()
        if name.lower() == "connection"
        for value in _header_values(values)
        for token in value.split(",")
    }


def _header_values(value: Any) -> list[str]:
    """Stored header values (JSON) as HTTP field values; a list is a repeated header."""
    if value is None:
        return []
    if isinstance(value, list):
        return [text for item in value for text in _header_values(item)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | int | float):
        return [str(value)]
    return [json.dumps(value, separators=(",", ":"), ensure_ascii=False)]


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(no reason given)"


# --- AMQP ---------------------------------------------------------------------------------


def _amqp_deliver(delivery: Delivery, timeout: float) -> Outcome:
    exchange, routing_key = _amqp_route(delivery.destination, delivery.amqp_to_exchange)
    url = _broker_url(delivery, "amqp")
    broker = Connection(
        url,
        connect_timeout=timeout,
        heartbeat=0,
        transport_options={
            "confirm_publish": True,
            "read_timeout": timeout,
            "write_timeout": timeout,
        },
    )
    host = _host_port(urlsplit(url), default_port=None)
    broker_errors = (*broker.connection_errors, *broker.channel_errors, OSError)
    try:
        try:
            broker.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            channel = broker.channel()
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
            return Outcome(
                FAILED, f"could not connect to {host}: {_words(error)}; nothing was sent"
            )
        return _amqp_publish(
            channel, message, exchange, routing_key, timeout=timeout, host=host,
            lost=(*broker.connection_errors, OSError),
        )  # fmt: skip
    finally:
        with contextlib.suppress(*broker_errors):
            broker.release()


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
            f"no confirm from RabbitMQ at {host} within {_seconds(timeout)} ({where}); "
            "it may have taken the message",
        )
    except lost as error:
        return Outcome(
            UNKNOWN,
            f"lost the connection to RabbitMQ at {host} before it confirmed ({where}): "
            f"{_words(error)}; it may have taken the message",
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
        if name.lower() not in _AMQP_NOT_FORWARDED and not _ours_or_dead_lettering(name)
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


def _amqp_address(destination: dict[str, Any], broker_url: str, to_exchange: bool) -> str:
    url = urlsplit(_destination_url(destination, broker_url, "amqp"))
    scheme = "amqps" if url.scheme in ("amqps", "pyamqps") else "amqp"
    host = _host_port(url, default_port=5671 if scheme == "amqps" else 5672)
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    exchange, routing_key = _amqp_route(destination, to_exchange)
    if exchange == "":  # the default exchange delivers to the queue its routing key names
        return f"{scheme}://{host}/{_name(vhost)}/queue/{_name(routing_key)}"
    return f"{scheme}://{host}/{_name(vhost)}/exchange/{_name(exchange)}"


# --- Redis --------------------------------------------------------------------------------


def _redis_deliver(delivery: Delivery, timeout: float) -> Outcome:
    stream = _text_field(delivery.destination, "stream")
    url = _broker_url(delivery, "redis")
    host = _redis_host(url)
    # No retries: a command sent again after a timeout would add the message twice.
    client = redis.Redis.from_url(
        _redis_py_url(url),
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    with client:
        try:
            client.ping()
        except redis.RedisError as error:
            return Outcome(
                FAILED, f"could not connect to {host}: {_words(error)}; nothing was sent"
            )
        try:
            entry_id = client.xadd(stream, _redis_fields(delivery))  # type: ignore[arg-type]
        except redis.ResponseError as error:
            return Outcome(FAILED, f"Redis at {host} refused it (stream {stream}): {error}")
        except redis.TimeoutError:
            return Outcome(
                UNKNOWN,
                f"timed out after {_seconds(timeout)} waiting for Redis at {host} "
                f"(stream {stream}); it may have added the message",
            )
        except redis.RedisError as error:
            return Outcome(
                UNKNOWN,
                f"lost the connection to Redis at {host} (stream {stream}): {_words(error)}; "
                "it may have added the message",
            )
    entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return Outcome(DELIVERED, f"added to stream {stream} on {host} as entry {entry}")


def _redis_fields(delivery: Delivery) -> dict[str, bytes | str]:
    headers = {
        name: value for name, value in delivery.headers.items() if not _ours_or_dead_lettering(name)
    }
    return {
        "payload": delivery.payload,
        "content_type": delivery.content_type,
        "message_id": delivery.message_id,
        IDEMPOTENCY_KEY: delivery.idempotency_key,
        REDIS_ATTEMPT_FIELD: delivery.attempt_id,
        "headers": json.dumps(headers, separators=(",", ":"), ensure_ascii=False),
    }


def _redis_py_url(url: str) -> str:
    """redis-py knows a unix socket as unix://, Celery and kombu as redis+socket://."""
    return "unix" + url.removeprefix("redis+socket") if url.startswith("redis+socket:") else url


def _redis_host(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("redis+socket", "unix"):
        return parts.path
    return _host_port(parts, default_port=None)


def _redis_address(destination: dict[str, Any], broker_url: str) -> str:
    stream = _text_field(destination, "stream")
    url = urlsplit(_destination_url(destination, broker_url, "redis"))
    query = parse_qs(url.query)
    if url.scheme in ("redis+socket", "unix"):
        db = query.get("db", ["0"])[0]
        return f"redis+socket://{url.path}/{_name(db)}/stream/{_name(stream)}"
    db = url.path.strip("/") or query.get("db", ["0"])[0]
    host = _host_port(url, default_port=6379)
    return f"{url.scheme}://{host}/{_name(db)}/stream/{_name(stream)}"


# --- Shared -------------------------------------------------------------------------------

_BROKER_SCHEMES = {
    "amqp": ("amqp", "amqps", "pyamqp", "pyamqps"),
    "redis": ("redis", "rediss", "redis+socket", "unix"),
}


def _broker_url(delivery: Delivery, transport: str) -> str:
    return _destination_url(delivery.destination, delivery.broker_url, transport)


def _destination_url(destination: dict[str, Any], broker_url: str, transport: str) -> str:
    """The destination's own broker, else the configured one; of the transport's kind."""
    url = destination.get("url") or broker_url
    if not isinstance(url, str) or not url:
        raise DestinationInvalid(
            f"The destination names no {transport} broker and none is configured."
        )
    schemes = _BROKER_SCHEMES[transport]
    if urlsplit(url).scheme not in schemes:
        raise DestinationInvalid(
            f"The {transport} broker must be a {' or '.join(s + '://' for s in schemes)} URL; "
            f"got {_without_password(url)!r}."
        )
    return url


def _text_field(destination: dict[str, Any], name: str) -> str:
    value = destination.get(name)
    if not isinstance(value, str) or not value:
        raise DestinationInvalid(f"The destination has no {name}.")
    return value


def _ours_or_dead_lettering(name: str) -> bool:
    lowered = name.lower()
    return lowered in _OURS or lowered.startswith(_DEATH_HEADERS)


def _host_port(url: Any, *, default_port: int | None) -> str:
    host = (url.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    return host if port is None or port == default_port else f"{host}:{port}"


def _name(name: str) -> str:
    """A name as one path segment: "/" and anything not allowed in a URL percent-encoded."""
    return quote(name, safe=":@!$&'()*+,;=")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{username}:***@{hostinfo}").geturl()


def _joined(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """HTTP headers as sent, names as written; a repeated header's values joined by commas."""
    joined: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode(), raw_value.decode("utf-8", "replace")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def _body(delivery: Delivery) -> dict[str, Any]:
    payload = delivery.payload
    try:
        body, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return {
        "body": body,
        "body_encoding": encoding,
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _words(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__
