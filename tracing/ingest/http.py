"""What every ingest endpoint does with the HTTP request before the payload is understood."""

from __future__ import annotations

import zlib

from django.conf import settings
from django.http import HttpRequest


class BodyRefused(Exception):
    """The body cannot be read; carries the HTTP status and the reason to send back."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_body(request: HttpRequest) -> bytes:
    """The request body, inflated if gzip, never larger than TIDELINE_INGEST_MAX_BYTES either way."""
    limit = settings.TIDELINE_INGEST_MAX_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        raise BodyRefused(400, "Content-Length is not a number.") from None
    if declared > limit:
        raise BodyRefused(413, f"The body is {declared} bytes; the limit is {limit}.")
    # request.read, not request.body: Django's own upload limit must not answer before ours.
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise BodyRefused(413, f"The body is over the limit of {limit} bytes.")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        return _gunzip(raw, limit)
    if encoding not in ("", "identity"):
        raise BodyRefused(
            415, f"Content-Encoding {encoding!r} is not supported; send gzip or none."
        )
    return raw


def _gunzip(raw: bytes, limit: int) -> bytes:
    # Inflate at most limit + 1 bytes: a gzip bomb is refused without being inflated whole.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise BodyRefused(400, f"The body is not valid gzip: {error}.") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise BodyRefused(413, f"The body inflates to more than the limit of {limit} bytes.")
    if not inflater.eof:
        raise BodyRefused(400, "The gzip body is truncated.")
    return body
