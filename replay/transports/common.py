"""What every transport shares: the delivery, its outcome, and the helpers that read a destination.

The names here are for the transport modules of this package; callers outside it use the
package itself (`from replay import transports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

DELIVERED, FAILED, UNKNOWN = "delivered", "failed", "unknown"

IDEMPOTENCY_KEY = "Idempotency-Key"
HTTP_ATTEMPT_HEADER = "X-Tideline-Replay-Attempt"
AMQP_ATTEMPT_HEADER = "x-tideline-replay-attempt"

# RabbitMQ's account of the message's deaths, and of its deliveries on a quorum queue.
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_OURS = frozenset(
    name.lower() for name in (IDEMPOTENCY_KEY, HTTP_ATTEMPT_HEADER, AMQP_ATTEMPT_HEADER)
)
_BROKER_SCHEMES = {
    "amqp": ("amqp", "amqps", "pyamqp", "pyamqps"),
    "redis": ("redis", "rediss", "redis+socket", "unix"),
}


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


def broker_url_of(delivery: Delivery, transport: str) -> str:
    return destination_url(delivery.destination, delivery.broker_url, transport)


def destination_url(destination: dict[str, Any], broker_url: str, transport: str) -> str:
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
            f"got {without_password(url)!r}."
        )
    return url


def text_field(destination: dict[str, Any], name: str) -> str:
    value = destination.get(name)
    if not isinstance(value, str) or not value:
        raise DestinationInvalid(f"The destination has no {name}.")
    return value


def ours_or_dead_lettering(name: str) -> bool:
    lowered = name.lower()
    return lowered in _OURS or lowered.startswith(_DEATH_HEADERS)


def host_port(url: Any, *, default_port: int | None) -> str:
    host = (url.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = url.port
    except ValueError:
        raise DestinationInvalid(
            f"{host} has a port that is not a number from 0 to 65535"
        ) from None
    return host if port is None or port == default_port else f"{host}:{port}"


def path_segment(name: str) -> str:
    """A name as one path segment: "/" and anything not allowed in a URL percent-encoded."""
    return quote(name, safe=":@!$&'()*+,;=")


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{username}:***@{hostinfo}").geturl()


def in_seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def in_words(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__
