"""Storing what senders deliver: each request in one transaction, bulk-loaded with COPY."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from psycopg.errors import UniqueViolation

from tracing.ingest.bulk import copy_rows, fetch_binary
from tracing.ingest.dead_letters import DeadLetterRow
from tracing.ingest.models import DeadLetter, FlowTouch
from tracing.ingest.otlp import SpanBatch
from tracing.ingest.records import RecordRow

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "duration_ns",
    "status_code", "status_message", "service_name", "resource_id", "scope_name", "attributes", "events",
    "links", "correlation_id", "message_id", "business_keys", "sender", "received_at",
)  # fmt: skip
_RESOURCE = SPAN_COLUMNS.index("resource_id")
_JSON_COLUMNS = [
    SPAN_COLUMNS.index(name) for name in ("attributes", "events", "links", "business_keys")
]
_CORRELATION = SPAN_COLUMNS.index("correlation_id")
_START = SPAN_COLUMNS.index("start_time")
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
    with transaction.atomic(), connection.cursor() as cursor:
        _statement_timeout()
        resource_ids = _resources_upsert(cursor, batch)
        rows = [span_copy_row(row, resource_ids) for row in batch.rows]
        try:
            # Almost every batch is new: COPY straight into the table. A retry collides with
            # the spans it already stored; only then take the slower path that skips them.
            with transaction.atomic():
                copy_rows(cursor, "ingest_span", SPAN_COLUMNS, rows)
        except UniqueViolation:
            return _spans_store_skipping_known(cursor, rows)
        copy_rows(
            cursor,
            "ingest_flowtouch",
            ("trace_id", "correlation_id", "first_start", "last_start"),
            _span_touches(rows),
        )
    return StoredSpans(accepted=len(rows), duplicates=0)


def _span_touches(rows: list[list[Any]]) -> list[tuple[bytes, str | None, datetime, datetime]]:
    """One mark per trace and correlation ID, with when the new spans start, first to last,
    so the summarizer knows which daily partitions hold the trace."""
    starts: dict[tuple[bytes, str | None], tuple[datetime, datetime]] = {}
    for row in rows:
        key, start = (row[0], row[_CORRELATION]), row[_START]
        first, last = starts.get(key, (start, start))
        starts[key] = (min(first, start), max(last, start))
    return [(trace, correlation, *span) for (trace, correlation), span in starts.items()]


def span_copy_row(row: list[Any], resource_ids: dict[bytes, int]) -> list[Any]:
    row[_RESOURCE] = resource_ids[row[_RESOURCE]]
    for index in _JSON_COLUMNS:
        # otlp.span_batch encodes JSON as it builds each row; other callers pass the values.
        if type(row[index]) is not bytes:
            row[index] = _json_text(row[index])
    return row


def _json_text(value: Any) -> str:
    # msgspec encodes several times faster than json.dumps; this runs twice per record.
    return msgspec.json.encode(value).decode()


def _spans_store_skipping_known(cursor: Any, rows: list[list[Any]]) -> StoredSpans:
    columns = ", ".join(SPAN_COLUMNS)
    _incoming_table(cursor, "ingest_span")
    copy_rows(cursor, "ingest_span_incoming", SPAN_COLUMNS, rows)
    cursor.execute(
        f"""
        WITH inserted AS (
            INSERT INTO ingest_span ({columns}) SELECT {columns} FROM ingest_span_incoming
            ON CONFLICT DO NOTHING RETURNING trace_id, correlation_id, start_time
        ), touched AS (
            INSERT INTO ingest_flowtouch (trace_id, correlation_id, first_start, last_start)
            SELECT trace_id, correlation_id, min(start_time), max(start_time) FROM inserted
            GROUP BY 1, 2
        )
        SELECT count(*) FROM inserted
        """  # noqa: S608 - fixed column names
    )
    accepted = int(cursor.fetchone()[0])
    return StoredSpans(accepted=accepted, duplicates=len(rows) - accepted)


def _resource_ids_remember(found: dict[bytes, int]) -> None:
    # Resources with a per-process attribute (service.instance.id) are new after every
    # restart of a sender; forget everything now and then rather than grow without end.
    if len(_resource_ids) > 10_000:
        _resource_ids.clear()
    _resource_ids.update(found)


def _statement_timeout() -> None:
    """Inside the ingest transaction: a stalled database answers 503 instead of hanging."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SET LOCAL statement_timeout = {int(settings.TIDELINE_INGEST_STATEMENT_TIMEOUT_MS)}"
        )


def _incoming_table(cursor: Any, table: str) -> None:
    """An empty per-connection staging table for COPY (COPY cannot skip duplicates itself)."""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table}_incoming (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    # Empty already after a commit; cleared anyway in case the caller runs inside an outer transaction.
    cursor.execute(f"DELETE FROM {table}_incoming")  # noqa: S608 - fixed table names


def _resources_upsert(cursor: Any, batch: SpanBatch) -> dict[bytes, int]:
    ids = {digest: _resource_ids[digest] for digest in batch.resources if digest in _resource_ids}
    missing = [digest for digest in batch.resources if digest not in ids]
    if missing:
        cursor.executemany(
            "INSERT INTO ingest_resource (digest, service_name, attributes) VALUES (%s, %s, %s) "
            "ON CONFLICT (digest) DO NOTHING",
            [
                (digest, batch.resources[digest][0], json.dumps(batch.resources[digest][1]))
                for digest in missing
            ],
        )
        cursor.execute("SELECT digest, id FROM ingest_resource WHERE digest = ANY(%s)", [missing])
        found = {bytes(digest): resource_id for digest, resource_id in cursor.fetchall()}
        ids.update(found)
        # Remember them only once committed: a rolled-back insert must not leave an id behind.
        transaction.on_commit(lambda: _resource_ids_remember(found))
    return ids


RECORD_COLUMNS = (
    "sender", "record_id", "occurred_at", "system", "step", "event", "message_id", "correlation_id",
    "trace_id", "span_id", "business_keys", "payload", "payload_digest", "content_type", "headers", "error",
    "counts_expected", "counts_processed", "source", "raw_body_id", "raw_position", "received_at",
)  # fmt: skip


_RECORD_TRACE = RECORD_COLUMNS.index("trace_id")
_RECORD_CORRELATION = RECORD_COLUMNS.index("correlation_id")
_RECORD_MESSAGE = RECORD_COLUMNS.index("message_id")


@dataclass(frozen=True)
class StoredRecords:
    accepted: int
    duplicates: int


class RecordsConflict(Exception):
    """Record IDs already stored with other content; nothing of the batch was stored."""

    def __init__(self, record_ids: list[str]) -> None:
        super().__init__(f"{len(record_ids)} record_id(s) already stored with different content.")
        self.record_ids = record_ids


def records_store(
    *, rows: list[RecordRow], body: bytes, content_type: str, sender: str, received_at: datetime
) -> StoredRecords:
    """Store a validated batch all-or-nothing, each (sender, record_id) once.

    The body is kept once as received, by digest; each record points to it and its position.
    """
    first_rows = list({row.record.record_id: row for row in reversed(rows)}.values())[::-1]
    body_digest = hashlib.sha256(body).digest()
    with transaction.atomic(), connection.cursor() as cursor:
        _statement_timeout()
        cursor.execute(
            "INSERT INTO ingest_rawbody (digest, content_type, body, sender, received_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING",
            [body_digest, content_type, body, sender, received_at],
        )
        new_rows = _record_keys_claim(cursor, first_rows, sender)
        _records_copy(
            cursor, new_rows, sender=sender, body_digest=body_digest, received_at=received_at
        )
    return StoredRecords(accepted=len(new_rows), duplicates=len(rows) - len(new_rows))


def _record_keys_claim(cursor: Any, rows: list[RecordRow], sender: str) -> list[RecordRow]:
    """The rows whose key is new; RecordsConflict if a known key comes with other content."""
    ids = [row.record.record_id for row in rows]
    digests = [row.content_digest for row in rows]
    inserted = fetch_binary(
        """
        INSERT INTO ingest_recordkey (sender, record_id, content_digest)
        SELECT %s, record_id, digest FROM unnest(%b::text[], %b::bytea[]) AS batch(record_id, digest)
        ON CONFLICT DO NOTHING RETURNING record_id
        """,
        [sender, ids, digests],
    )
    claimed = {row[0] for row in inserted}
    known = [record_id for record_id in ids if record_id not in claimed]
    if known:
        cursor.execute(
            "SELECT record_id, content_digest FROM ingest_recordkey WHERE sender = %s AND record_id = ANY(%s)",
            [sender, known],
        )
        stored = {record_id: bytes(digest) for record_id, digest in cursor.fetchall()}
        conflicts = [row.record.record_id for row in rows if row.record.record_id in stored
                     and stored[row.record.record_id] != row.content_digest]  # fmt: skip
        if conflicts:
            raise RecordsConflict(conflicts)
    return [row for row in rows if row.record.record_id in claimed]


def _records_copy(
    cursor: Any, rows: list[RecordRow], *, sender: str, body_digest: bytes, received_at: datetime
) -> None:
    """COPY straight into the record table: the key table has already kept out duplicates."""
    values = [_record_values(row, sender, body_digest, received_at) for row in rows]
    copy_rows(cursor, "ingest_record", RECORD_COLUMNS, values)
    touched = {_record_touch(value) for value in values}
    copy_rows(cursor, "ingest_flowtouch", ("trace_id", "correlation_id", "message_id"), touched)


def _record_touch(value: list[Any]) -> tuple[bytes | None, str | None, str | None]:
    trace_id, correlation_id = value[_RECORD_TRACE], value[_RECORD_CORRELATION]
    # With neither, only the message ID can join the record to a flow.
    message_id = value[_RECORD_MESSAGE] if trace_id is None and correlation_id is None else None
    return trace_id, correlation_id, message_id


def _record_values(
    row: RecordRow, sender: str, body_digest: bytes, received_at: datetime
) -> list[Any]:
    record = row.record
    return [
        sender, record.record_id, record.occurred_at, record.system, record.step, record.event,
        record.message_id, record.correlation_id,
        bytes.fromhex(record.trace_id) if record.trace_id else None,
        bytes.fromhex(record.span_id) if record.span_id else None,
        _json_text(record.business_keys), row.payload, row.payload_digest, record.content_type,
        _json_text(record.headers), record.error,
        record.counts.expected if record.counts else None,
        record.counts.processed if record.counts else None,
        record.source, body_digest, row.position, received_at,
    ]  # fmt: skip


@dataclass(frozen=True)
class StoredDeadLetters:
    created: int
    reopened: int
    duplicates: int


def dead_letters_store(
    *, rows: list[DeadLetterRow], sender: str, source: str, received_at: datetime
) -> StoredDeadLetters:
    """Store each dead letter once per (sender, message key); a new death of a known message
    reopens it and is added to its history, and a death already recorded changes nothing."""
    created = reopened = duplicates = 0
    with transaction.atomic():
        _statement_timeout()
        keys = {row.message_key for row in rows}
        known = {
            letter.message_key: letter
            for letter in DeadLetter.objects.select_for_update().filter(
                sender=sender, message_key__in=keys
            )
        }
        for row in rows:
            letter = known.get(row.message_key)
            if letter is None:
                letter = _dead_letter_create(row, sender, source, received_at)
                if letter is not None:
                    known[row.message_key] = letter
                    created += 1
                    continue
                # Another request stored this message a moment ago: take its row as known.
                letter = known[row.message_key] = DeadLetter.objects.select_for_update().get(
                    sender=sender, message_key=row.message_key
                )
            if any(death["death_id"] == row.death_id for death in letter.history):
                duplicates += 1
            else:
                _dead_letter_reopen(letter, row, source, received_at)
                reopened += 1
    return StoredDeadLetters(created=created, reopened=reopened, duplicates=duplicates)


def _death(row: DeadLetterRow, source: str, received_at: datetime) -> dict[str, Any]:
    return {
        "death_id": row.death_id,
        "failed_at": row.last_failed_at.isoformat(),
        "error": row.letter.error,
        "attempts": row.letter.attempts,
        "payload_digest": row.payload_digest.hex(),
        "x_death": row.letter.x_death,
        "source": source,
        "received_at": received_at.isoformat(),
    }


def _dead_letter_create(
    row: DeadLetterRow, sender: str, source: str, received_at: datetime
) -> DeadLetter | None:
    """The new dead letter, or None when a concurrent request created it first."""
    try:
        with transaction.atomic():  # a savepoint: losing the race must not abort the batch
            dead_letter = _dead_letter_insert(row, sender, source, received_at)
    except IntegrityError:
        return None
    dead_letters_touch([dead_letter])
    return dead_letter


def _dead_letter_insert(
    row: DeadLetterRow, sender: str, source: str, received_at: datetime
) -> DeadLetter:
    letter = row.letter
    return DeadLetter.objects.create(
        sender=sender, message_key=row.message_key, message_id=letter.message_id or "",
        correlation_id=letter.correlation_id, system=letter.system, transport=letter.transport,
        destination=row.destination, headers=letter.headers, properties=letter.properties, payload=row.payload, payload_digest=row.payload_digest,
        content_type=letter.content_type, error=letter.error, attempts=letter.attempts,
        first_failed_at=row.first_failed_at, last_failed_at=row.last_failed_at,
        history=[_death(row, source, received_at)],
    )  # fmt: skip


def _dead_letter_reopen(
    dead_letter: DeadLetter, row: DeadLetterRow, source: str, received_at: datetime
) -> None:
    dead_letter.history = [*dead_letter.history, _death(row, source, received_at)]
    dead_letter.payload, dead_letter.payload_digest = row.payload, row.payload_digest
    dead_letter.headers, dead_letter.error = row.letter.headers, row.letter.error
    dead_letter.properties = row.letter.properties
    dead_letter.attempts = row.letter.attempts
    dead_letter.last_failed_at = max(dead_letter.last_failed_at, row.last_failed_at)
    dead_letter.state = DeadLetter.State.NEW
    dead_letter.version += 1
    dead_letter.updated_at = received_at
    dead_letter.save()
    dead_letters_touch([dead_letter])


def dead_letters_touch(dead_letters: Iterable[DeadLetter]) -> None:
    """Mark each dead letter's flow for the summarizer: by correlation ID, else by message ID."""
    FlowTouch.objects.bulk_create(
        FlowTouch(correlation_id=d.correlation_id)
        if d.correlation_id
        else FlowTouch(message_id=d.message_id)
        for d in dead_letters
        if d.correlation_id or d.message_id
    )
