"""OTLP JSON (the proto3 JSON mapping with hex trace and span IDs), decoded by msgspec.

Google's json_format parser is pure Python and several times slower than the protobuf
path. These Structs mirror the OTLP messages field for field, with the protobuf's
snake_case names, so `otlp.span_batch` reads them exactly as it reads protobuf messages.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus

from tracing.ingest.otlp import OtlpDecodeError

# Nanoseconds since 1970 (fixed64 in the protobuf; int64 here, which reaches 2262): a JSON
# number outside is refused at decoding instead of overflowing later.
UnixNano = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class Struct(msgspec.Struct, rename="camel", kw_only=True, gc=False):
    """OTLP JSON: lowerCamelCase field names, unknown fields ignored, every field optional.

    gc=False: decoded requests hold no reference cycles, and tracking the thousands of
    structs of one request made the garbage collector a third of the decoding's CPU.
    """


class AnyValue(Struct):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | None = None
    double_value: float | None = None
    array_value: ArrayValue | None = None
    kvlist_value: KeyValueList | None = None
    bytes_value: bytes | None = None  # base64 in JSON; msgspec decodes it

    def WhichOneof(self, group: str) -> str | None:
        for name in _ANY_VALUE_FIELDS:
            if getattr(self, name) is not None:
                return name
        return None


class ArrayValue(Struct):
    values: list[AnyValue] = []


class KeyValue(Struct):
    key: str = ""
    value: AnyValue = msgspec.field(default_factory=AnyValue)


class KeyValueList(Struct):
    values: list[KeyValue] = []


_ANY_VALUE_FIELDS = tuple(AnyValue.__struct_fields__)


class Resource(Struct):
    attributes: list[KeyValue] = []


class Scope(Struct):
    name: str = ""


class Status(Struct):
    code: int | str = 0
    message: str = ""


class Event(Struct):
    time_unix_nano: UnixNano = 0
    name: str = ""
    attributes: list[KeyValue] = []


# IDs arrive as hex text and leave decode_json as bytes, as in the protobuf messages.
class Link(Struct):
    trace_id: Any = b""
    span_id: Any = b""
    attributes: list[KeyValue] = []


class Span(Struct):
    trace_id: Any = b""
    span_id: Any = b""
    parent_span_id: Any = b""
    name: str = ""
    kind: int | str = 0  # the spec says integers; some exporters send the enum's name
    start_time_unix_nano: UnixNano = 0
    end_time_unix_nano: UnixNano = 0
    attributes: list[KeyValue] = []
    events: list[Event] = []
    links: list[Link] = []
    status: Status = msgspec.field(default_factory=Status)


class ScopeSpans(Struct):
    scope: Scope = msgspec.field(default_factory=Scope)
    spans: list[Span] = []


class ResourceSpans(Struct):
    resource: Resource = msgspec.field(default_factory=Resource)
    scope_spans: list[ScopeSpans] = []


class ExportTraceServiceRequest(Struct):
    resource_spans: list[ResourceSpans] = []


_decoder = msgspec.json.Decoder(
    ExportTraceServiceRequest, strict=False
)  # strict=False: int64 as strings


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        export = _decoder.decode(body)
    except UnicodeDecodeError as error:
        raise OtlpDecodeError(f"The body is not valid UTF-8 (byte {error.start}).") from None
    except RecursionError:
        raise OtlpDecodeError("The JSON body is nested too deeply.") from None
    except msgspec.ValidationError as error:
        raise OtlpDecodeError(
            f"The JSON body is not an OTLP ExportTraceServiceRequest: {error}."
        ) from None
    except msgspec.DecodeError as error:
        raise OtlpDecodeError(f"The body is not valid JSON: {error}.") from None
    for resource_spans in export.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.trace_id, span.span_id = _id(span.trace_id), _id(span.span_id)
                span.parent_span_id = _id(span.parent_span_id)
                span.kind = _enum(OtlpSpan.SpanKind, span.kind)
                span.status.code = _enum(OtlpStatus.StatusCode, span.status.code)
                for link in span.links:
                    link.trace_id, link.span_id = _id(link.trace_id), _id(link.span_id)
    return export


def _enum(enum: Any, value: int | str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(enum.Value(value))
    except ValueError:
        raise OtlpDecodeError(f"{value!r} is not a value of {enum.DESCRIPTOR.name}.") from None


def _id(hex_id: Any) -> bytes:
    """OTLP JSON IDs are hex; one that is not becomes empty, so only its span is rejected."""
    if isinstance(hex_id, bytes):
        return hex_id
    try:
        return bytes.fromhex(hex_id) if isinstance(hex_id, str) else b""
    except ValueError:
        return b""
