"""Storing what senders deliver: each request in one transaction, bulk-loaded with COPY."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from tracing.ingest.otlp import SpanBatch

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "duration_ns",
    "status_code", "status_message", "service_name", "resource_id", "scope_name", "attributes", "events",
    "links", "correlation_id", "message_id", "business_keys", "sender", "received_at",
)  # fmt: skip
_RESOURCE = SPAN_COLUMNS.index("resource_id")
_JSON_COLUMNS = [
    SPAN_COLUMNS.index(name) for name in ("attributes", "events", "links", "business_keys")
]
_resource_ids: dict[bytes, int] = {}  # resources rarely change; spare the lookup per request


@dataclass(frozen=True)
class StoredSpans:
    accepted: int
    duplicates: int


def spans_store(*, batch: SpanBatch) -> StoredSpans:
    """Store a batch once: spans already stored (an exporter's retry) are counted, not repeated.

    In the same transaction, mark every trace and correlation ID that received new spans so
    the flow summarizer finds them without scanning.
    """
    if not batch.rows:
        return StoredSpans(accepted=0, duplicates=0)
    columns = ", ".join(SPAN_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SET LOCAL statement_timeout = {int(settings.TIDELINE_INGEST_STATEMENT_TIMEOUT_MS)}"
        )
        resource_ids = _resources_upsert(cursor, batch)
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_span_incoming (LIKE ingest_span) ON COMMIT DELETE ROWS"
        )
        with cursor.cursor.copy(f"COPY ingest_span_incoming ({columns}) FROM STDIN") as copy:
            for row in batch.rows:
                row[_RESOURCE] = resource_ids[row[_RESOURCE]]
                for index in _JSON_COLUMNS:
                    row[index] = Jsonb(row[index])
                copy.write_row(row)
        cursor.execute(
            f"""
            WITH inserted AS (
                INSERT INTO ingest_span ({columns}) SELECT {columns} FROM ingest_span_incoming
                ON CONFLICT DO NOTHING RETURNING trace_id, correlation_id
            ), touched AS (
                INSERT INTO ingest_flowtouch (trace_id, correlation_id)
                SELECT DISTINCT trace_id, correlation_id FROM inserted
            )
            SELECT count(*) FROM inserted
            """  # noqa: S608 - fixed column names
        )
        accepted = cursor.fetchone()[0]
    return StoredSpans(accepted=accepted, duplicates=len(batch.rows) - accepted)


def _resources_upsert(cursor: Any, batch: SpanBatch) -> dict[bytes, int]:
    missing = [digest for digest in batch.resources if digest not in _resource_ids]
    if missing:
        cursor.executemany(
            "INSERT INTO ingest_resource (digest, service_name, attributes) VALUES (%s, %s, %s) "
            "ON CONFLICT (digest) DO NOTHING",
            [
                (digest, *batch.resources[digest][:1], json.dumps(batch.resources[digest][1]))
                for digest in missing
            ],
        )
        cursor.execute("SELECT digest, id FROM ingest_resource WHERE digest = ANY(%s)", [missing])
        _resource_ids.update(
            (bytes(digest), resource_id) for digest, resource_id in cursor.fetchall()
        )
    return {digest: _resource_ids[digest] for digest in batch.resources}
