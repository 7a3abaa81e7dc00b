"""A dead letter added again to a Redis stream, as one XADD and no retries."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from replay.transports.common import (
    DELIVERED,
    FAILED,
    IDEMPOTENCY_KEY,
    UNKNOWN,
    Delivery,
    Outcome,
    broker_url_of,
    destination_url,
    host_port,
    in_seconds,
    in_words,
    ours_or_dead_lettering,
    path_segment,
    text_field,
    without_password,
)

REDIS_ATTEMPT_FIELD = "replay_attempt"


def deliver(delivery: Delivery, timeout: float) -> Outcome:
    stream = text_field(delivery.destination, "stream")
    url = broker_url_of(delivery, "redis")
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
                FAILED, f"could not connect to {host}: {in_words(error)}; nothing was sent"
            )
        try:
            entry_id = client.xadd(stream, _redis_fields(delivery))  # type: ignore[arg-type]
        except redis.ResponseError as error:
            return Outcome(FAILED, f"Redis at {host} refused it (stream {stream}): {error}")
        except redis.TimeoutError:
            return Outcome(
                UNKNOWN,
                f"timed out after {in_seconds(timeout)} waiting for Redis at {host} "
                f"(stream {stream}); it may have added the message",
            )
        except redis.RedisError as error:
            return Outcome(
                UNKNOWN,
                f"lost the connection to Redis at {host} (stream {stream}): {in_words(error)}; "
                "it may have added the message",
            )
    entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return Outcome(DELIVERED, f"added to stream {stream} on {host} as entry {entry}")


def preview(delivery: Delivery) -> dict[str, Any]:
    """The entry `deliver` would add, payload aside, for the dry run."""
    fields = _redis_fields(delivery)
    del fields["payload"]
    return {
        "redis": without_password(broker_url_of(delivery, "redis")),
        "stream": text_field(delivery.destination, "stream"),
        "fields": fields,
    }


def address(destination: dict[str, Any], broker_url: str) -> str:
    stream = text_field(destination, "stream")
    url = urlsplit(destination_url(destination, broker_url, "redis"))
    query = parse_qs(url.query)
    if url.scheme in ("redis+socket", "unix"):
        db = query.get("db", ["0"])[0]
        return f"redis+socket://{url.path}/{path_segment(db)}/stream/{path_segment(stream)}"
    db = url.path.strip("/") or query.get("db", ["0"])[0]
    host = host_port(url, default_port=6379)
    return f"{url.scheme}://{host}/{path_segment(db)}/stream/{path_segment(stream)}"


def _redis_fields(delivery: Delivery) -> dict[str, bytes | str]:
    headers = {
        name: value for name, value in delivery.headers.items() if not ours_or_dead_lettering(name)
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
    return host_port(parts, default_port=None)
