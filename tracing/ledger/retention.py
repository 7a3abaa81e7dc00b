"""Retention that keeps verifiability: old payloads go, the ledger's entries stay.

A ledger entry holds only digests (entries.py), so erasing a record's payload, a dead
letter's payload or a raw request body changes no entry, no proof and no bundle already
given out. Each system keeps its payloads as long as TIDELINE_PAYLOAD_RETENTION says; a raw
body goes once every record it carried is past its own system's retention. Span partitions
older than TIDELINE_SPAN_RETENTION_DAYS are dropped whole (spans are support's evidence, not
the audit log). Every run is journaled with what it pruned.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from console.services import journal_append
from tracing.flows.digests import span_digests_forget
from tracing.ingest.models import DeadLetter
from tracing.ingest.partitions import (
    SPAN_TABLE,
    partition_days,
    partition_name,
    stored_range_forget,
)
from tracing.ledger.retention_policy import DEFAULT


def _cutoffs(now: datetime) -> tuple[dict[str, datetime], datetime]:
    policy = dict(settings.TIDELINE_PAYLOAD_RETENTION)
    default = now - timedelta(days=policy.pop(DEFAULT))
    return {system: now - timedelta(days=days) for system, days in policy.items()}, default


def _system_cutoff_sql(
    column: str, named: dict[str, datetime], default: datetime
) -> tuple[str, list[Any]]:
    """CASE <column> WHEN 'QMS' THEN <cutoff> ... ELSE <default cutoff> END, with parameters."""
    if not named:
        return "%s", [default]
    whens = " ".join("WHEN %s THEN %s" for _ in named)
    params: list[Any] = [value for item in named.items() for value in item]
    return f"(CASE {column} {whens} ELSE %s END)", [*params, default]


# Dead letters nobody will send again: their payloads follow the retention policy.
SETTLED_DEAD_LETTER_STATES = (
    DeadLetter.State.REPLAYED,
    DeadLetter.State.RESOLVED,
    DeadLetter.State.DISCARDED,
)


def payloads_prune(*, now: datetime) -> dict[str, int]:
    """Erase payloads past their system's retention; returns how many of each were pruned."""
    named, default = _cutoffs(now)
    records_cutoff, records_params = _system_cutoff_sql("r.system", named, default)
    letters_cutoff, letters_params = _system_cutoff_sql("d.system", named, default)
    latest = max([default, *named.values()])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE ingest_record r SET payload = NULL WHERE r.payload IS NOT NULL "  # noqa: S608 - fixed SQL
            f"AND r.occurred_at < %s AND r.occurred_at < {records_cutoff}",
            [latest, *records_params],
        )
        records = cursor.rowcount
        # A dead letter still waiting for a decision keeps its payload: it is the only copy of
        # an undelivered business message, and a replay would otherwise send nothing.
        cursor.execute(
            f"UPDATE ingest_deadletter d SET payload = ''::bytea WHERE d.payload <> ''::bytea "  # noqa: S608
            f"AND d.state = ANY(%s) AND d.last_failed_at < {letters_cutoff}",
            [[state.value for state in SETTLED_DEAD_LETTER_STATES], *letters_params],
        )
        dead_letters = cursor.rowcount
        # Only bodies that carried old records; kept while any record in them is still kept.
        cursor.execute(
            f"DELETE FROM ingest_rawbody b WHERE b.digest IN (SELECT r.raw_body_id "  # noqa: S608
            f"FROM ingest_record r WHERE r.occurred_at < %s) AND NOT EXISTS ("
            f"SELECT 1 FROM ingest_record r WHERE r.raw_body_id = b.digest "
            f"AND r.occurred_at >= {records_cutoff})",
            [latest, *records_params],
        )
        raw_bodies = cursor.rowcount
    return {"records": records, "dead_letters": dead_letters, "raw_bodies": raw_bodies}


def span_partitions_drop(*, now: datetime) -> list[str]:
    """Drop the daily span partitions wholly older than TIDELINE_SPAN_RETENTION_DAYS."""
    horizon = now.date() - timedelta(days=settings.TIDELINE_SPAN_RETENTION_DAYS)
    dropped = []
    with connection.cursor() as cursor:
        for day in partition_days(SPAN_TABLE):
            if day < horizon:
                name = partition_name(SPAN_TABLE, day)
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
                dropped.append(name)
    stored_range_forget()
    if dropped:
        span_digests_forget()
    return dropped


def retention_run(*, now: datetime) -> dict[str, int]:
    """The daily retention run, journaled as "retention.run" with what it pruned."""
    pruned = payloads_prune(now=now)
    dropped = span_partitions_drop(now=now)
    journal_append(
        actor=None, action="retention.run", subject="retention",
        details={
            **pruned, "span_partitions_dropped": dropped,
            "policy": {system: f"{days}d" for system, days in settings.TIDELINE_PAYLOAD_RETENTION.items()},
            "span_retention": f"{settings.TIDELINE_SPAN_RETENTION_DAYS}d",
        },
    )  # fmt: skip
    return {**pruned, "span_partitions": len(dropped)}
