"""The ingest endpoints. Senders authenticate with an ingest token as a Bearer."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import psycopg
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from console.authentication import IngestAuthError, ingest_token_from
from tracing.ingest import metrics
from tracing.ingest.activity import sender_activity_count
from tracing.ingest.dead_letters import dead_letters_parse
from tracing.ingest.http import BodyRefused, read_body
from tracing.ingest.otlp import OtlpDecodeError, decode_protobuf, span_batch
from tracing.ingest.otlp_json import decode_json
from tracing.ingest.partitions import RECORD_TABLE, stored_range
from tracing.ingest.records import CONTENT_TYPES, RecordsInvalid, json_decode, records_parse
from tracing.ingest.services import RecordsConflict, dead_letters_store, records_store, spans_store

log = logging.getLogger(__name__)
View = Callable[[HttpRequest], HttpResponse]
Refuse = Callable[[HttpRequest, int, str, str], HttpResponse]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Long enough for a restarting database, short enough that an SDK's few retries span an outage.
RETRY_AFTER_SECONDS = "2"
# The database is away (or too slow: a statement timeout is an OperationalError too). COPY
# runs on psycopg's own cursor, so its errors arrive unwrapped by Django. A real bug such as
# an IntegrityError stays a 500 on purpose: a 503 would make senders retry it forever.
UNAVAILABLE = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
# Data PostgreSQL will never take (a NUL character in text, say): the sender must fix it, not retry.
UNSTORABLE = (DataError, psycopg.DataError)
_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    503: code_pb2.UNAVAILABLE,
}


def _unstorable(error: Exception) -> str:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"A value in this request cannot be stored ({reason}); nothing of it was stored."


def _log_unavailable(error: Exception) -> None:
    # Never a 500 when the database is away: senders retry a 503 with Retry-After, so
    # nothing is lost. The token lookup can fail this way too, so this wraps the whole view.
    log.warning("ingest: database unavailable", extra={"error": str(error)})


def _otlp_response(
    message: ExportTraceServiceResponse | status_pb2.Status, content_type: str, status: int
) -> HttpResponse:
    if content_type == JSON:
        body = json_format.MessageToJson(message, indent=None).encode()
    else:
        body = message.SerializeToString()
    response = HttpResponse(body, status=status, content_type=content_type)
    if status == 503:
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _otlp_error(
    status: int, reason: str, content_type: str, *, sender: str = "", cause: str
) -> HttpResponse:
    metrics.REJECTED.labels("traces", sender, cause).inc()
    return _otlp_response(
        status_pb2.Status(code=_GRPC_CODE[status], message=reason), content_type, status
    )


def ingest_endpoint(stream: str, what: str, refuse: Refuse) -> Callable[[View], View]:
    """What every ingest view shares: POST only, no CSRF (senders are not browsers), its
    latency measured, and database trouble answered in the stream's own error shape."""

    def decorate(handle: View) -> View:
        @csrf_exempt
        @require_POST
        @functools.wraps(handle)
        def view(request: HttpRequest) -> HttpResponse:
            started = time.perf_counter()
            try:
                return handle(request)
            except UNSTORABLE as error:
                return refuse(request, 400, _unstorable(error), "unstorable")
            except UNAVAILABLE as error:
                _log_unavailable(error)
                return refuse(
                    request,
                    503,
                    f"Tideline cannot store {what} right now; retry shortly.",
                    "unavailable",
                )
            finally:
                metrics.LATENCY.labels(stream).observe(time.perf_counter() - started)

        return view

    return decorate


def _otlp_content_type(request: HttpRequest) -> str:
    """Answer in the request's encoding; protobuf when it has none we speak."""
    return request.content_type if request.content_type in (PROTOBUF, JSON) else PROTOBUF


def _otlp_refuse(request: HttpRequest, status: int, detail: str, cause: str) -> HttpResponse:
    return _otlp_error(status, detail, _otlp_content_type(request), cause=cause)


@ingest_endpoint("traces", "spans", _otlp_refuse)
def otlp_traces(request: HttpRequest) -> HttpResponse:
    """OTLP/HTTP ExportTraceServiceRequest, protobuf or JSON, optionally gzip."""
    content_type = _otlp_content_type(request)
    try:
        token = ingest_token_from(request)
    except IngestAuthError as refusal:
        return _otlp_error(401, str(refusal), content_type, cause="unauthenticated")
    if request.content_type not in (PROTOBUF, JSON):
        reason = f"Content-Type {request.content_type or '(none)'!r} is not OTLP; send {PROTOBUF} or {JSON}."
        return _otlp_error(415, reason, content_type, sender=token.sender, cause="content_type")
    try:
        body = read_body(request)
        export = decode_json(body) if content_type == JSON else decode_protobuf(body)
    except BodyRefused as refusal:
        return _otlp_error(
            refusal.status, refusal.reason, content_type, sender=token.sender, cause="body"
        )
    except OtlpDecodeError as error:
        return _otlp_error(400, str(error), content_type, sender=token.sender, cause="undecodable")
    batch = span_batch(export, token=token, received_at=timezone.now(), stored_range=stored_range())
    stored = spans_store(batch=batch)
    sender_activity_count(
        sender=token.sender, stream="spans", accepted=stored.accepted, at=timezone.now()
    )
    metrics.ACCEPTED.labels("traces", token.sender).inc(stored.accepted)
    metrics.DUPLICATES.labels("traces", token.sender).inc(stored.duplicates)
    answer = ExportTraceServiceResponse()
    if batch.rejected_count:
        metrics.REJECTED.labels("traces", token.sender, "invalid_span").inc(batch.rejected_count)
        answer.partial_success.rejected_spans = batch.rejected_count
        answer.partial_success.error_message = batch.rejection_message()
    return _otlp_response(answer, content_type, 200)


def _refusal(
    status: int, detail: str, *, stream: str, sender: str, cause: str, **extra: object
) -> JsonResponse:
    metrics.REJECTED.labels(stream, sender, cause).inc()
    response = JsonResponse({"detail": detail, **extra}, status=status)
    if status == 503:
        response["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def _json_refuse(stream: str) -> Refuse:
    def refuse(request: HttpRequest, status: int, detail: str, cause: str) -> HttpResponse:
        return _refusal(status, detail, stream=stream, sender="", cause=cause)

    return refuse


@ingest_endpoint("records", "records", _json_refuse("records"))
def audit_records(request: HttpRequest) -> HttpResponse:
    """Audit records: a JSON array, JSON Lines or CloudEvents; a batch is all-or-nothing."""
    try:
        token = ingest_token_from(request)
    except IngestAuthError as refusal:
        return _refusal(401, str(refusal), stream="records", sender="", cause="unauthenticated")
    sender = token.sender
    if request.content_type not in CONTENT_TYPES:
        detail = f"Content-Type {request.content_type or '(none)'!r} is not accepted; send one of {', '.join(CONTENT_TYPES)}."
        return _refusal(415, detail, stream="records", sender=sender, cause="content_type")
    try:
        body = read_body(request)
        rows = records_parse(
            body, request.content_type, token=token, stored_range=stored_range(RECORD_TABLE)
        )
    except BodyRefused as refusal:
        return _refusal(
            refusal.status, refusal.reason, stream="records", sender=sender, cause="body"
        )
    except RecordsInvalid as invalid:
        errors = [problem.as_dict() for problem in invalid.problems]
        return _refusal(
            400, str(invalid), stream="records", sender=sender, cause="invalid", errors=errors
        )
    try:
        stored = records_store(
            rows=rows,
            body=body,
            content_type=request.content_type,
            sender=sender,
            received_at=timezone.now(),
        )
    except RecordsConflict as conflict:
        detail = f"{conflict} Nothing of this batch was stored."
        return _refusal(
            409,
            detail,
            stream="records",
            sender=sender,
            cause="conflict",
            record_ids=conflict.record_ids,
        )
    sender_activity_count(
        sender=sender, stream="records", accepted=stored.accepted, at=timezone.now()
    )
    metrics.ACCEPTED.labels("records", sender).inc(stored.accepted)
    metrics.DUPLICATES.labels("records", sender).inc(stored.duplicates)
    return JsonResponse({"accepted": stored.accepted, "duplicates": stored.duplicates})


@ingest_endpoint("dead_letters", "dead letters", _json_refuse("dead_letters"))
def dead_letters(request: HttpRequest) -> HttpResponse:
    """Dead letters: one JSON object or an array; a batch is all-or-nothing."""
    try:
        token = ingest_token_from(request)
    except IngestAuthError as refusal:
        return _refusal(
            401, str(refusal), stream="dead_letters", sender="", cause="unauthenticated"
        )
    sender = token.sender
    if request.content_type != JSON:
        detail = f"Content-Type {request.content_type or '(none)'!r} is not accepted; send {JSON}."
        return _refusal(415, detail, stream="dead_letters", sender=sender, cause="content_type")
    received_at = timezone.now()
    try:
        body = read_body(request)
        if not body.strip():
            raise RecordsInvalid([], "The body is empty; send a dead letter or an array of them.")
        document = json_decode(body)
        documents = document if isinstance(document, list) else [document]
        rows = dead_letters_parse(documents, token=token, received_at=received_at)
    except BodyRefused as refusal:
        return _refusal(
            refusal.status, refusal.reason, stream="dead_letters", sender=sender, cause="body"
        )
    except RecordsInvalid as invalid:
        errors = [problem.as_dict() for problem in invalid.problems]
        return _refusal(
            400, str(invalid), stream="dead_letters", sender=sender, cause="invalid", errors=errors
        )
    stored = dead_letters_store(rows=rows, sender=sender, source="api", received_at=received_at)
    sender_activity_count(
        sender=sender,
        stream="dead_letters",
        accepted=stored.created + stored.reopened,
        at=timezone.now(),
    )
    metrics.ACCEPTED.labels("dead_letters", sender).inc(stored.created + stored.reopened)
    metrics.DUPLICATES.labels("dead_letters", sender).inc(stored.duplicates)
    return JsonResponse(
        {"created": stored.created, "reopened": stored.reopened, "duplicates": stored.duplicates}
    )
