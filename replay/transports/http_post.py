"""A dead letter sent again as one HTTP POST, redirects not followed."""

from __future__ import annotations

import contextlib
import functools
import http
import json
import os
import ssl
import threading
from typing import Any

import httpx

from replay.transports.common import (
    DELIVERED,
    FAILED,
    HTTP_ATTEMPT_HEADER,
    IDEMPOTENCY_KEY,
    UNKNOWN,
    Delivery,
    DestinationInvalid,
    Outcome,
    in_seconds,
    in_words,
    ours_or_dead_lettering,
    text_field,
    without_password,
)

HTTP_MESSAGE_ID_HEADER = "X-Message-Id"

# Hop-by-hop headers belong to the original connection; httpx sets Host and Content-Length.
_HTTP_NOT_FORWARDED = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
        "expect", "content-length", "host",
    }
)  # fmt: skip


@functools.cache
def _tls() -> ssl.SSLContext:
    # Loading the system's CA certificates costs ~20 ms; a worker process does it once.
    return ssl.create_default_context()


class _Clients(threading.local):
    """One HTTP client per thread of a process, so a worker keeps its connections alive from
    one replay to the next instead of connecting for each (a bulk job sends thousands)."""

    pid: int = 0
    client: httpx.Client | None = None


_clients = _Clients()


def _client() -> httpx.Client:
    if _clients.client is None or _clients.pid != os.getpid():
        # After a fork the parent's client is not ours to use, nor to close.
        _clients.pid = os.getpid()
        _clients.client = httpx.Client(follow_redirects=False, verify=_tls())
    return _clients.client


def deliver(delivery: Delivery, timeout: float) -> Outcome:
    request = _http_request(delivery)
    request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
    host = request.url.netloc.decode("ascii")
    seconds = in_seconds(timeout)
    try:
        response = _client().send(request, stream=True)
    except httpx.ConnectTimeout:
        return Outcome(FAILED, f"timed out after {seconds} connecting to {host}; nothing was sent")
    except (httpx.ConnectError, httpx.ProxyError) as error:
        return Outcome(FAILED, f"could not connect to {host}: {in_words(error)}; nothing was sent")
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.PoolTimeout) as error:
        return Outcome(FAILED, f"could not send to {host}: {in_words(error)}; nothing was sent")
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
            f"{host} closed the connection without answering ({in_words(error)}); "
            "it may have received the message",
        )
    with contextlib.closing(response):
        return _http_outcome(response, host)


def preview(delivery: Delivery) -> dict[str, Any]:
    """The request `deliver` would send, for the dry run."""
    request = _http_request(delivery)
    return {
        "method": request.method,
        "url": without_password(str(request.url)),
        "headers": _joined(request.headers.raw),
    }


def address(destination: dict[str, Any]) -> str:
    url = _http_url(text_field(destination, "url"))
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _http_outcome(response: httpx.Response, host: str) -> Outcome:
    status = response.status_code
    reason = response.reason_phrase or _status_phrase(status)
    detail = f"HTTP {status} from {host}: {reason}"
    if 200 <= status < 300:
        _drain(response)
        return Outcome(DELIVERED, detail, status)
    if 300 <= status < 400:
        detail += f"; redirect to {response.headers.get('location', '(no location)')} not followed"
    elif excerpt := _answer_excerpt(response):
        detail += f" — {excerpt}"
    return Outcome(FAILED, detail, status)


def _drain(response: httpx.Response, limit: int = 64 * 1024) -> None:
    """Read a short answer to its end, so its connection can carry the next replay; a long
    one is cut off with its connection. The status has already said how it went."""
    received = 0
    with contextlib.suppress(httpx.HTTPError):
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > limit:
                break


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
    url = _http_url(text_field(delivery.destination, "url"))
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
        if name.lower() not in not_forwarded and not ours_or_dead_lettering(name)
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


def _joined(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """HTTP headers as sent, names as written; a repeated header's values joined by commas."""
    joined: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode(), raw_value.decode("utf-8", "replace")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined
