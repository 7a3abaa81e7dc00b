"""OTLP/HTTP trace requests: protobuf decoding, and span rows from either encoding.

The protobuf classes come from `opentelemetry-proto`; JSON is decoded in otlp_json.py into
look-alike structs that `span_batch` reads the same way. Each span is checked on its own,
so one bad span is rejected (partial success) while the rest of the request is stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.conf import settings
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from console.models import IngestToken

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A protobuf message, or its look-alike struct from otlp_json.py: read the same way.
Message = Any


class OtlpDecodeError(ValueError):
    """The body is not an ExportTraceServiceRequest; the message says what is wrong."""


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    export = ExportTraceServiceRequest()
    try:
        export.ParseFromString(body)
    except DecodeError as error:
        raise OtlpDecodeError(
            f"The body is not a valid protobuf ExportTraceServiceRequest: {error}."
        ) from None
    return export


# Scalars that go into JSON as they are; the rest need converting (NaN, base64, nesting).
_PLAIN_KINDS = frozenset(("string_value", "int_value", "bool_value"))


def any_value(value: Message) -> Any:
    kind = value.WhichOneof("value")
    if kind in _PLAIN_KINDS:
        return getattr(value, kind)
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)  # JSON has no NaN or Infinity
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes_of(key_values: Any) -> dict[str, Any]:
    return {item.key: any_value(item.value) for item in key_values}


def _time(unix_nano: int) -> datetime:
    return EPOCH + timedelta(microseconds=unix_nano // 1000)


@dataclass
class SpanBatch:
    """The rows of one request, ready for COPY, and what was rejected and why.

    Rows follow services.SPAN_COLUMNS; their JSON columns hold JSON text already (bytes).
    """

    rows: list[list[Any]] = field(default_factory=list)
    resources: dict[bytes, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def rejection_message(self) -> str:
        reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(self.rejected.items()))
        return f"{self.rejected_count} span(s) rejected: {reasons}."


@dataclass(frozen=True)
class KeyRules:
    """Which attributes carry the correlation ID, business keys and message ID (read once a batch)."""

    correlation_keys: tuple[str, ...]
    business_prefix: str
    message_id_key: str

    @classmethod
    def from_settings(cls) -> KeyRules:
        return cls(
            correlation_keys=tuple(settings.TIDELINE_CORRELATION_KEYS),
            business_prefix=settings.TIDELINE_BUSINESS_KEY_PREFIX,
            message_id_key=settings.TIDELINE_MESSAGE_ID_KEY,
        )


@dataclass(frozen=True)
class SpanSource:
    """What every span of one resource and scope shares."""

    service: str
    resource_digest: bytes
    resource: dict[str, Any]
    scope_name: str
    sender: str
    received_at: datetime


class _Rejected(Exception):
    """A span that cannot be stored; the message says why (counted, never raised further)."""


def span_batch(
    export: Message,
    *,
    token: IngestToken,
    received_at: datetime,
    stored_range: tuple[datetime, datetime] | None,
) -> SpanBatch:
    batch, rules = SpanBatch(), KeyRules.from_settings()
    window = _Window(stored_range)
    for resource_spans in export.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        service = str(resource.get("service.name", "unknown_service"))
        if not token.allows_system(service):
            count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            batch.rejected[
                f"from service {service!r}, which this ingest token may not send for"
            ] += count
            continue
        digest = hashlib.sha256(
            json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        batch.resources[digest] = (service, resource)
        for scope_spans in resource_spans.scope_spans:
            source = SpanSource(
                service, digest, resource, scope_spans.scope.name, token.sender, received_at
            )
            for span in scope_spans.spans:
                try:
                    batch.rows.append(_span_row(span, source, rules, window))
                except _Rejected as rejected:
                    batch.rejected[str(rejected)] += 1
    return batch


class _Window:
    """The stored range in microseconds since 1970, so a span's start is checked before any
    datetime is made for it."""

    def __init__(self, stored_range: tuple[datetime, datetime] | None) -> None:
        self.first, self.end = (
            ((stored_range[0] - EPOCH) // _MICROSECOND, (stored_range[1] - EPOCH) // _MICROSECOND)
            if stored_range
            else (0, 0)
        )
        days = (
            f"{stored_range[0]:%Y-%m-%d} to {stored_range[1]:%Y-%m-%d}" if stored_range else "none"
        )
        self.problem = f"starting outside the stored range ({days})"


_MICROSECOND = timedelta(microseconds=1)
_NO_ID = bytes(16)
_NO_SPAN_ID = bytes(8)
_EMPTY_LIST = b"[]"


def _span_row(span: Message, source: SpanSource, rules: KeyRules, window: _Window) -> list[Any]:
    """The span's row, each protobuf field read once (every read builds a Python object)."""
    trace_id, span_id, parent_span_id = span.trace_id, span.span_id, span.parent_span_id
    start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
    if len(trace_id) != 16 or trace_id == _NO_ID:
        raise _Rejected("with a trace_id that is not 16 bytes (32 hex digits) or is all zero")
    if len(span_id) != 8 or span_id == _NO_SPAN_ID:
        raise _Rejected("with a span_id that is not 8 bytes (16 hex digits) or is all zero")
    if parent_span_id and len(parent_span_id) != 8:
        raise _Rejected("with a parent_span_id that is not 8 bytes")
    if end_ns < start_ns:
        raise _Rejected("ending before they start")
    if end_ns - start_ns >= 2**63:
        raise _Rejected("lasting longer than a duration can be stored")
    start_us = start_ns // 1000
    if not window.first <= start_us < window.end:
        raise _Rejected(window.problem)
    attributes = attributes_of(span.attributes)
    cut, prefix = len(rules.business_prefix), rules.business_prefix
    business_keys = {
        key[cut:]: str(value) for key, value in attributes.items() if key.startswith(prefix)
    }
    message_id = attributes.get(rules.message_id_key)
    status = span.status
    return [
        trace_id, span_id, parent_span_id or None, span.name, span.kind,
        _time(start_ns), _time(end_ns), end_ns - start_ns,
        status.code, status.message, source.service,
        source.resource_digest,  # replaced by the resource's id when stored
        source.scope_name, _json(attributes), _events(span), _links(span),
        _correlation_id(attributes, source.resource, rules.correlation_keys),
        str(message_id) if message_id is not None else None,
        _json(business_keys), source.sender, source.received_at,
    ]  # fmt: skip


def _json(value: Any) -> bytes:
    # msgspec encodes several times faster than json.dumps; this runs four times per span.
    return msgspec.json.encode(value)


def _correlation_id(
    attributes: dict[str, Any], resource: dict[str, Any], keys: tuple[str, ...]
) -> str | None:
    """The first configured key found, the span's own attributes before its resource's."""
    for key in keys:
        if key in attributes:
            return str(attributes[key])
        if key in resource:
            return str(resource[key])
    return None


def _events(span: Message) -> bytes:
    events = span.events
    if not events:  # most spans: spare building and encoding an empty list
        return _EMPTY_LIST
    return _json(
        [
            {
                "name": event.name,
                "time": _time(event.time_unix_nano).isoformat(),
                "attributes": attributes_of(event.attributes),
            }
            for event in events
        ]
    )


def _links(span: Message) -> bytes:
    links = span.links
    if not links:
        return _EMPTY_LIST
    return _json(
        [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": attributes_of(link.attributes),
            }
            for link in links
        ]
    )
