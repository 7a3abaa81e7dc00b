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

Each transport lives in its own module (`http_post`, `amqp_publish`, `redis_stream`), what
they share in `common`; callers use only the names below.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from replay.transports import amqp_publish, http_post, redis_stream
from replay.transports.amqp_publish import AMQP_TO_EXCHANGE_WARNING
from replay.transports.common import FAILED, Delivery, DestinationInvalid, Outcome, broker_url_of

__all__ = [
    "AMQP_TO_EXCHANGE_WARNING",
    "Delivery",
    "DestinationInvalid",
    "Outcome",
    "deliver",
    "deliver_together",
    "destination_address",
    "request_preview",
    "together_key",
]


def deliver(delivery: Delivery, *, timeout: float) -> Outcome:
    """Send once; `timeout` (seconds) bounds connecting and each wait for the other side."""
    try:
        if delivery.transport == "http":
            return http_post.deliver(delivery, timeout)
        if delivery.transport == "amqp":
            return amqp_publish.deliver(delivery, timeout)
        if delivery.transport == "redis":
            return redis_stream.deliver(delivery, timeout)
        raise DestinationInvalid(f"Tideline cannot send over {delivery.transport!r}.")
    except DestinationInvalid as invalid:
        return Outcome(FAILED, f"{invalid} Nothing was sent.")


def together_key(delivery: Delivery) -> str | None:
    """Deliveries with the same key may be sent as one group by `deliver_together`: AMQP ones
    to one broker. None: this one is sent alone, with `deliver`."""
    if delivery.transport != "amqp":
        return None
    try:
        return broker_url_of(delivery, "amqp")
    except DestinationInvalid:
        return None


def deliver_together(deliveries: Sequence[Delivery], *, timeout: float) -> list[Outcome]:
    """Send deliveries of one `together_key` as a group: published one after another, then
    RabbitMQ's confirms of them all awaited together (one wait for the group, not one per
    message); each message's outcome is its own. `timeout` bounds connecting, writing the
    group and waiting for its confirms, each."""
    return amqp_publish.deliver_together(deliveries, timeout)


def request_preview(delivery: Delivery) -> dict[str, Any]:
    """The dry run: what `deliver` would send, nothing sent. Raises DestinationInvalid."""
    address = _delivery_address(delivery)
    if delivery.transport == "http":
        target = http_post.preview(delivery)
    elif delivery.transport == "amqp":
        target = amqp_publish.preview(delivery)
    else:
        target = redis_stream.preview(delivery)
    return {"transport": delivery.transport, "address": address, **target, **_body(delivery)}


def destination_address(
    transport: str, destination: dict[str, Any], broker_url: str, *, amqp_to_exchange: bool = False
) -> str:
    """Where a replay goes, as one string for allow-list checks (forms: the package's doc).

    Pass `amqp_to_exchange` as the delivery will: the exchange is then the destination.
    Raises DestinationInvalid when there is nowhere to send to.
    """
    return _address(
        transport, json.dumps(destination, sort_keys=True), broker_url, amqp_to_exchange
    )


@functools.lru_cache(maxsize=1024)
def _address(transport: str, destination_json: str, broker_url: str, amqp_to_exchange: bool) -> str:
    """Remembered: a bulk job's chunk mostly shares a few destinations, and parsing a URL
    for each of its messages was a good part of preparing it."""
    destination = json.loads(destination_json)
    if transport == "http":
        return http_post.address(destination)
    if transport == "amqp":
        return amqp_publish.address(destination, broker_url, amqp_to_exchange)
    if transport == "redis":
        return redis_stream.address(destination, broker_url)
    raise DestinationInvalid(f"Tideline cannot send over {transport!r}.")


def _delivery_address(delivery: Delivery) -> str:
    return destination_address(
        delivery.transport,
        delivery.destination,
        delivery.broker_url,
        amqp_to_exchange=delivery.amqp_to_exchange,
    )


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
