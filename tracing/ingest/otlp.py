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


def any_value(value: Message) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
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
    """The rows of one request, ready for COPY, and what was rejected and why."""

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


def span_batch(
    export: Message,
    *,
    token: IngestToken,
    received_at: datetime,
    stored_range: tuple[datetime, datetime] | None,
) -> SpanBatch:
    batch, rules = SpanBatch(), KeyRules.from_settings()
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
                problem = _span_problem(span, stored_range)
                if problem:
                    batch.rejected[problem] += 1
                else:
                    batch.rows.append(_span_row(span, source, rules))
    return batch


def _span_problem(span: Message, stored_range: tuple[datetime, datetime] | None) -> str | None:
    if len(span.trace_id) != 16 or span.trace_id == bytes(16):
        return "with a trace_id that is not 16 bytes (32 hex digits) or is all zero"
    if len(span.span_id) != 8 or span.span_id == bytes(8):
        return "with a span_id that is not 8 bytes (16 hex digits) or is all zero"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "with a parent_span_id that is not 8 bytes"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "ending before they start"
    if span.end_time_unix_nano - span.start_time_unix_nano >= 2**63:
        return "lasting longer than a duration can be stored"
    start = _time(span.start_time_unix_nano)
    if stored_range is None or not stored_range[0] <= start < stored_range[1]:
        window = (
            f"{stored_range[0]:%Y-%m-%d} to {stored_range[1]:%Y-%m-%d}" if stored_range else "none"
        )
        return f"starting outside the stored range ({window})"
    return None


def _span_row(span: Message, source: SpanSource, rules: KeyRules) -> list[Any]:
    attributes = attributes_of(span.attributes)
    cut = len(rules.business_prefix)
    business_keys = {
        key[cut:]: str(value)
        for key, value in attributes.items()
        if key.startswith(rules.business_prefix)
    }
    correlation_id = next(
        (
            str(where[key])
            for key in rules.correlation_keys
            for where in (attributes, source.resource)
            if key in where
        ),
        None,
    )
    message_id = attributes.get(rules.message_id_key)
    events = [
        {
            "name": event.name,
            "time": _time(event.time_unix_nano).isoformat(),
            "attributes": attributes_of(event.attributes),
        }
        for event in span.events
    ]
    links = [
        {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": attributes_of(link.attributes),
        }
        for link in span.links
    ]
    return [
        span.trace_id,
        span.span_id,
        span.parent_span_id or None,
        span.name,
        span.kind,
        _time(span.start_time_unix_nano),
        _time(span.end_time_unix_nano),
        span.end_time_unix_nano - span.start_time_unix_nano,
        span.status.code,
        span.status.message,
        source.service,
        source.resource_digest,  # replaced by the resource's id when stored
        source.scope_name,
        attributes,
        events,
        links,
        correlation_id,
        str(message_id) if message_id is not None else None,
        business_keys,
        source.sender,
        source.received_at,
    ]
