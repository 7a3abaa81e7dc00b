"""OTLP/HTTP traces: the real OpenTelemetry SDK exports to Tideline; bad requests are refused."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from django.db import connection
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from console.services import api_token_create, ingest_token_create

TRACE_ID = "5b8efff798038103d269b633813fc60c"


def logs_export() -> bytes:
    """An OTLP logs request: protobuf, but of another message type than traces."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    logs = ExportLogsServiceRequest()
    scope = logs.resource_logs.add().scope_logs.add()
    record = scope.log_records.add()
    record.time_unix_nano, record.trace_id = 1_700_000_000_000_000_000, b"\x01" * 16
    record.body.string_value = "stock export finished"
    return logs.SerializeToString()


def deeply_nested_attribute(depth: int) -> bytes:
    """A well-formed request whose one attribute is an array nested `depth` deep."""
    value = b'{"arrayValue": {"values": [' * depth + b"{}" + b"]}}" * depth
    attribute = b'{"key": "k", "value": ' + value + b"}"
    return (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [' + attribute + b"]}]}]}]}"
    )


def span_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ingest_span")
        return int(cursor.fetchone()[0])


def otlp_json(spans: list[dict[str, Any]], service: str = "ERP") -> bytes:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return json.dumps(
        {
            "resourceSpans": [
                {"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}
            ]
        }
    ).encode()


def a_span(
    span_id: str = "eee19b7ec3c1b174", start: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    start = start or datetime.now(UTC) - timedelta(minutes=1)
    nanos = int(start.timestamp() * 1e9)
    return {
        "traceId": TRACE_ID, "spanId": span_id, "name": "order.create", "kind": 2,
        "startTimeUnixNano": str(nanos), "endTimeUnixNano": nanos + 5_000_000,
        "attributes": [
            {"key": "correlation.id", "value": {"stringValue": "4711"}},
            {"key": "business.order", "value": {"stringValue": "4711"}},
            {"key": "retry.count", "value": {"intValue": "2"}},
        ],
        **extra,
    }  # fmt: skip


@pytest.fixture
def sender(transactional_db: Any) -> str:
    return ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret


def post(
    live_server: Any,
    token: str,
    body: bytes,
    content_type: str = "application/json",
    **headers: str,
) -> httpx.Response:
    return httpx.post(
        f"{live_server.url}/v1/traces", content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, **headers}, timeout=30,
    )  # fmt: skip


def test_the_opentelemetry_sdk_exports_5000_spans_stored_once_each(
    live_server: Any, sender: str
) -> None:
    exporter = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        provider = TracerProvider(resource=Resource.create())
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        tracer = provider.get_tracer("wms")
        for order in range(1000):
            with tracer.start_as_current_span("order", attributes={"correlation.id": f"order-{order}"}):
                for step in range(4):
                    with tracer.start_as_current_span(f"stock.reserve.{step}", attributes={"business.order": str(order)}):
                        pass
        provider.shutdown()
        """
    )
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": live_server.url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={quote('Bearer ' + sender)}",
        "OTEL_SERVICE_NAME": "WMS",
        "OTEL_BSP_MAX_QUEUE_SIZE": "10000",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30",
    }
    result = subprocess.run(
        [sys.executable, "-c", exporter],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Failed to export" not in result.stderr, result.stderr
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT sender), min(sender), count(correlation_id) FROM ingest_span"
        )
        assert cursor.fetchone() == (5000, 1, "runtime-prod", 1000)
        cursor.execute("SELECT count(DISTINCT correlation_id) FROM ingest_flowtouch")
        assert cursor.fetchone()[0] == 1000


def test_a_retried_request_is_stored_once(live_server: Any, sender: str) -> None:
    body = otlp_json([a_span(), a_span("aaa19b7ec3c1b174")])
    assert post(live_server, sender, body).status_code == 200
    again = post(live_server, sender, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert again.status_code == 200 and again.json() == {}
    assert span_count() == 2
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT correlation_id, business_keys->>'order', attributes->>'retry.count', service_name FROM ingest_span LIMIT 1"
        )
        assert cursor.fetchone() == ("4711", "4711", "2", "ERP")


def test_protobuf_in_protobuf_out_with_partial_success(live_server: Any, sender: str) -> None:
    export = ExportTraceServiceRequest()
    spans = [
        a_span(),
        a_span("bbb19b7ec3c1b174", start=datetime.now(UTC) - timedelta(days=400)),
        a_span("0000000000000000"),
    ]
    from google.protobuf import json_format

    document = json.loads(otlp_json(spans))
    for span in document["resourceSpans"][0]["scopeSpans"][0][
        "spans"
    ]:  # proto3 JSON wants base64 IDs
        span["traceId"] = base64.b64encode(bytes.fromhex(span["traceId"])).decode()
        span["spanId"] = base64.b64encode(bytes.fromhex(span["spanId"])).decode()
    json_format.ParseDict(document, export)
    response = post(live_server, sender, export.SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "starting outside the stored range" in answer.partial_success.error_message
    assert "span_id that is not 8 bytes" in answer.partial_success.error_message
    assert span_count() == 1


def test_a_token_limited_to_systems_refuses_other_services(
    live_server: Any, transactional_db: Any
) -> None:
    token = ingest_token_create(sender="wms-adapter", systems=["WMS"], actor="test").secret
    response = post(live_server, token, otlp_json([a_span()], service="FIN"))
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "'FIN'" in response.json()["partialSuccess"]["errorMessage"]
    assert span_count() == 0


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "message"),
    [
        (b"\x0a\xff\xff", "application/x-protobuf", {}, 400, "not a valid protobuf"),
        (
            logs_export(),
            "application/x-protobuf",
            {},
            400,
            "not a valid protobuf ExportTraceServiceRequest",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "x"}]}]}]}',
            "application/json",
            {},
            400,
            "not an OTLP",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff\xfe"}]}]}]}',
            "application/json",
            {},
            400,
            "not valid UTF-8",
        ),
        (deeply_nested_attribute(20_000), "application/json", {}, 400, "nested too deeply"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "application/json",
            {},
            400,
            "not an OTLP ExportTraceServiceRequest",
        ),
        (b"", "application/json", {}, 400, "not valid JSON"),
        (b"{}", "text/plain", {}, 415, "is not OTLP"),
        (
            gzip.compress(b"\0" * (64 * 1024 * 1024)),
            "application/x-protobuf",
            {"Content-Encoding": "gzip"},
            413,
            "inflates to more than",
        ),
        (b"x" * (17 * 1024 * 1024), "application/x-protobuf", {}, 413, "the limit is"),
        (
            gzip.compress(b"{}")[:-6],
            "application/json",
            {"Content-Encoding": "gzip"},
            400,
            "truncated",
        ),
    ],
    ids=[
        "truncated-protobuf",
        "logs-not-traces",
        "wrong-json-types",
        "invalid-utf8",
        "deep-json",
        "array-not-object",
        "empty",
        "other-type",
        "gzip-bomb",
        "too-large",
        "truncated-gzip",
    ],
)
def test_bad_requests_are_refused_with_a_reason_and_store_nothing(
    live_server: Any,
    sender: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = post(live_server, sender, body, content_type, **headers)
    assert response.status_code == status
    if content_type == "application/json":
        assert message in response.json()["message"]
    else:
        assert message in status_pb2.Status.FromString(response.content).message
    assert span_count() == 0


@pytest.mark.parametrize("kind", ["missing", "revoked", "personal"])
def test_ingest_refuses_requests_without_a_valid_ingest_token(
    live_server: Any, sender: str, kind: str, make_user: Any
) -> None:
    from console.access import Role
    from console.models import IngestToken
    from console.services import ingest_token_revoke

    if kind == "revoked":
        ingest_token_revoke(token=IngestToken.objects.get(), actor="test")
        token = sender
    elif kind == "personal":
        token = api_token_create(user=make_user(Role.ADMIN), name="cli").secret
    body = otlp_json([a_span()])
    headers = {"Content-Type": "application/json"} | (
        {} if kind == "missing" else {"Authorization": f"Bearer {token}"}
    )
    response = httpx.post(f"{live_server.url}/v1/traces", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["message"]
    assert span_count() == 0


def test_json_enums_may_come_as_integers_or_names(live_server: Any, sender: str) -> None:
    spans = [
        a_span(kind=3),
        a_span(
            "ccc19b7ec3c1b174",
            kind="SPAN_KIND_CONSUMER",
            status={"code": "STATUS_CODE_ERROR", "message": "HTTP 503 from QMS"},
        ),
    ]
    assert post(live_server, sender, otlp_json(spans)).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT kind, status_code, status_message FROM ingest_span ORDER BY kind")
        assert cursor.fetchall() == [(3, 0, ""), (5, 2, "HTTP 503 from QMS")]
    bad = post(
        live_server, sender, otlp_json([a_span("ddd19b7ec3c1b174", kind="SPAN_KIND_SIDEWAYS")])
    )
    assert (
        bad.status_code == 400
        and "'SPAN_KIND_SIDEWAYS' is not a value of SpanKind" in bad.json()["message"]
    )


def test_impossible_times_are_refused_not_a_server_error(live_server: Any, sender: str) -> None:
    too_late = post(
        live_server, sender, otlp_json([a_span(startTimeUnixNano="99999999999999999999999")])
    )
    assert too_late.status_code == 400 and "startTimeUnixNano" in too_late.json()["message"]
    export = ExportTraceServiceRequest()
    span = export.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes.fromhex(TRACE_ID), b"\x01" * 8, "endless"
    span.start_time_unix_nano = int(datetime.now(UTC).timestamp() * 1e9)
    span.end_time_unix_nano = 2**64 - 1  # fixed64 allows it; no duration column does
    endless = post(live_server, sender, export.SerializeToString(), "application/x-protobuf")
    assert endless.status_code == 200
    answer = ExportTraceServiceResponse.FromString(endless.content)
    assert "lasting longer than a duration can be stored" in answer.partial_success.error_message
    assert span_count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "order\u0000create"},
        {"kind": 70_000},  # an open enum: any int32 decodes, smallint holds it not
        {"status": {"code": 70_000}},
        {"attributes": [{"key": "note", "value": {"stringValue": "a\u0000b"}}]},
    ],
    ids=["nul-in-name", "kind-beyond-smallint", "status-beyond-smallint", "nul-in-attribute"],
)
def test_values_postgresql_cannot_keep_are_a_400_and_store_nothing(
    live_server: Any, sender: str, bad: dict[str, Any]
) -> None:
    body = otlp_json([a_span(), a_span("fff19b7ec3c1b174", **bad)])
    response = post(live_server, sender, body)
    assert response.status_code == 400
    assert "cannot be stored" in response.json()["message"]
    assert span_count() == 0
