"""What a ledger entry says about each source row: ids, times, actor, action and digests.

Built by the sequencer from rows already stored, never by ingest. Never personal data or
payloads: a payload, the business keys, headers, an error text or a journal's details go in
only as SHA-256 digests ("sha256:<hex>"), so erasing a payload never breaks the log. Digests
of JSON columns are of PostgreSQL's jsonb text (deterministic for a stored value), computed
in the database to keep the sequencer fast; the raw request body's digest is the one ingest
stored it under.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from tracing.ledger.canonical import canonical_entry, jcs_object_sql, jcs_value_sql, rfc3339

# id, kind, source id, source time (as _utc_text writes it), version.
PendingRow = tuple[int, str, int, str | None, int | None]
PENDING_SQL = """
SELECT id, kind, source_id,
       to_char(source_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), source_version
FROM ledger_pendingentry ORDER BY id LIMIT %s
"""


class BuiltEntry(NamedTuple):
    """A tuple, not a frozen dataclass: a sequenced record makes one, and a tuple is made
    in a quarter of the time."""

    pending_id: int
    kind: str
    source_id: int
    at: str  # RFC 3339, as the entry says it
    system: str | None
    correlation_id: str | None
    body: bytes  # the entry's canonical JSON


def _digest(value: bytes | memoryview | None) -> str | None:
    return f"sha256:{bytes(value).hex()}" if value is not None else None


def _digests(**named: bytes | memoryview | str | None) -> dict[str, str]:
    found = {}
    for name, value in named.items():
        if isinstance(value, str):
            found[name] = f"sha256:{value}"
        elif value is not None:
            found[name] = _digest(value) or ""
    return found


def ids_literal(ids: Iterable[int]) -> str:
    """An integer array literal: for tens of thousands of ids, a fraction of what adapting a
    list costs."""
    return "{" + ",".join(map(str, ids)) + "}"


def _utc_text(column: str) -> str:
    """SQL for a time as entries carry it (rfc3339): formatted by PostgreSQL, so that the
    sequencer never parses a timestamp only to print it again."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _sha256_text(column: str) -> str:
    return f"'sha256:' || encode({column}, 'hex')"


def _digest_sql(column: str) -> str:
    return jcs_value_sql(_sha256_text(column), plain=True)


def _jsonb_digest_sql(column: str) -> str:
    return _digest_sql(f"sha256(convert_to({column}::text, 'UTF8'))")


_ERROR_DIGEST = _sha256_text("sha256(convert_to(r.error, 'UTF8'))")

# A record's entry, made whole by PostgreSQL: the sequencer only hashes and stores it.
RECORD_BODY_SQL = jcs_object_sql(
    {
        "v": "'1'", "kind": "'\"record\"'", "id": jcs_value_sql("r.id", plain=True),
        "at": jcs_value_sql(_utc_text("r.occurred_at"), plain=True),
        "received_at": jcs_value_sql(_utc_text("r.received_at"), plain=True),
        "actor": jcs_value_sql("r.sender"), "action": jcs_value_sql("r.event"),
        "system": jcs_value_sql("r.system"), "step": jcs_value_sql("r.step"),
        "record_id": jcs_value_sql("r.record_id"), "message_id": jcs_value_sql("r.message_id"),
        "correlation_id": jcs_value_sql("r.correlation_id"),
        "trace_id": jcs_value_sql("encode(r.trace_id, 'hex')", plain=True),
        "span_id": jcs_value_sql("encode(r.span_id, 'hex')", plain=True), "source": jcs_value_sql("r.source"),
        "raw_position": jcs_value_sql("r.raw_position", integer=True),
        "digests": jcs_object_sql(
            {
                "raw_body": _digest_sql("r.raw_body_id"),
                "business_keys": _jsonb_digest_sql("r.business_keys"),
                "headers": _jsonb_digest_sql("r.headers"),
            },
            optional={
                "payload": _sha256_text("r.payload_digest"),
                "error": f"CASE WHEN r.error <> '' THEN {_ERROR_DIGEST} END",
            },
        ),
    }
)  # fmt: skip

RECORDS_SQL = f"""
SELECT r.id, {_utc_text("r.occurred_at")}, r.system, r.correlation_id, {RECORD_BODY_SQL}
FROM ingest_record r
WHERE r.id = ANY(%s::bigint[]) AND r.occurred_at BETWEEN %s::timestamptz AND %s::timestamptz
"""  # noqa: S608 - fixed SQL fragments


def records_built(cursor: Any, pending: list[PendingRow]) -> dict[int, BuiltEntry]:
    """By source id: one query for the whole batch. The time bounds let PostgreSQL read only
    the partitions that hold them."""
    if not pending:
        return {}
    # One format for all: their text order is their time order.
    times = [row[3] for row in pending if row[3] is not None]
    cursor.execute(RECORDS_SQL, [ids_literal(row[2] for row in pending), min(times), max(times)])
    queued = {row[2]: row[0] for row in pending}
    return {
        record_id: BuiltEntry(
            queued[record_id], "record", record_id, at, system, correlation_id, body.encode()
        )
        for record_id, at, system, correlation_id, body in cursor.fetchall()
    }


DEAD_LETTERS_SQL = """
SELECT d.id, q.death, d.sender, d.message_id, d.correlation_id, d.system, d.transport,
       sha256(convert_to(d.destination::text, 'UTF8')),
       sha256(convert_to(d.headers::text, 'UTF8')),
       d.history -> (q.death - 1)
FROM ingest_deadletter d
JOIN unnest(%s::bigint[], %s::int[]) AS q(id, death) ON q.id = d.id
"""


def dead_letters_built(cursor: Any, pending: list[PendingRow]) -> dict[tuple[int, int], BuiltEntry]:
    """By (dead letter id, death number): each death of a message is its own entry."""
    if not pending:
        return {}
    cursor.execute(
        DEAD_LETTERS_SQL, [[row[2] for row in pending], [row[4] or 1 for row in pending]]
    )
    queued = {(row[2], row[4] or 1): row[0] for row in pending}
    built = {}
    for (letter_id, death_number, sender, message_id, correlation_id, system, transport,
         destination, headers, death) in cursor.fetchall():  # fmt: skip
        if death is None:
            continue
        death = json.loads(death) if isinstance(death, str) else death  # Django reads jsonb as text
        at = datetime.fromisoformat(death["failed_at"])
        content = {
            "v": 1, "kind": "dead_letter", "id": str(letter_id), "death": death_number,
            "death_id": death["death_id"], "at": rfc3339(at),
            "received_at": rfc3339(datetime.fromisoformat(death["received_at"])),
            "actor": sender, "action": "dead_lettered", "system": system,
            "message_id": message_id or None, "correlation_id": correlation_id,
            "transport": transport, "attempts": int(death["attempts"]),
            "source": death.get("source"),
            "digests": _digests(
                payload=death["payload_digest"], headers=headers, destination=destination,
                error=_text_digest(death.get("error") or ""),
            ),
        }  # fmt: skip
        key = (letter_id, death_number)
        built[key] = BuiltEntry(
            queued[key],
            "dead_letter",
            letter_id,
            content["at"],
            system,
            correlation_id,
            canonical_entry(content),
        )
    return built


def _text_digest(text: str) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text else None


JOURNAL_SQL = f"""
SELECT j.id, {_utc_text("j.at")}, j.actor, j.action, j.subject, j.request_id,
       {_sha256_text("sha256(convert_to(j.details::text, 'UTF8'))")}
FROM console_journalentry j WHERE j.id = ANY(%s)
"""  # noqa: S608 - fixed SQL fragments


def journal_built(cursor: Any, pending: list[PendingRow]) -> dict[int, BuiltEntry]:
    """By journal id. The remote address stays out: even its digest would identify a person."""
    if not pending:
        return {}
    cursor.execute(JOURNAL_SQL, [[row[2] for row in pending]])
    queued = {row[2]: row[0] for row in pending}
    built = {}
    for journal_id, at, actor, action, subject, request_id, details in cursor.fetchall():
        content = {
            "v": 1, "kind": "journal", "id": str(journal_id), "at": at,
            "actor": actor, "action": action, "subject": subject,
            "request_id": request_id or None, "digests": {"details": details},
        }  # fmt: skip
        built[journal_id] = BuiltEntry(
            queued[journal_id], "journal", journal_id, at, None, None, canonical_entry(content)
        )
    return built
