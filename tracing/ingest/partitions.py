"""Daily partitions of the span and record tables: made ahead of time, and the range they cover.

Rows may arrive only for days that have a partition: from the retention horizon up to a
week ahead. Celery beat keeps that window moving (tasks.py); retention drops old days.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection

SPAN_TABLE = "ingest_span"
RECORD_TABLE = "ingest_record"
PARTITIONED_TABLES = (SPAN_TABLE, RECORD_TABLE)
_PARTITION = re.compile(r"_p(\d{8})$")
_CACHE_SECONDS = 60.0
_cached: dict[str, tuple[float, tuple[datetime, datetime] | None]] = {}


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partitions_ensure(*, now: datetime, table: str = SPAN_TABLE) -> list[str]:
    """Create the missing daily partitions from the retention horizon to a week ahead."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=settings.TIDELINE_SPAN_RETENTION_DAYS)
    last = today + timedelta(days=settings.TIDELINE_PARTITION_DAYS_AHEAD)
    existing = set(partition_days(table))
    created = []
    with connection.cursor() as cursor:
        day = first
        while day <= last:
            if day not in existing:
                name = partition_name(table, day)
                cursor.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table}" '
                    "FOR VALUES FROM (%s) TO (%s)",
                    [_midnight(day), _midnight(day + timedelta(days=1))],
                )
                created.append(name)
            day += timedelta(days=1)
    stored_range_forget()
    return created


def partitions_ensure_all(*, now: datetime) -> list[str]:
    return [
        name for table in PARTITIONED_TABLES for name in partitions_ensure(now=now, table=table)
    ]


def partition_days(table: str) -> list[date]:
    """The days that have a partition of the table, read from PostgreSQL's catalogue."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [table],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        match = _PARTITION.search(name)
        if match:
            days.append(datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC).date())
    return sorted(days)


def stored_range(table: str = SPAN_TABLE) -> tuple[datetime, datetime] | None:
    """[from, to) of the times a table can hold now; cached for a minute per process."""
    fetched_at, span = _cached.get(table, (0.0, None))
    if span is None or time.monotonic() - fetched_at > _CACHE_SECONDS:
        days = partition_days(table)
        span = (_midnight(days[0]), _midnight(days[-1] + timedelta(days=1))) if days else None
        _cached[table] = (time.monotonic(), span)
    return span


def stored_range_forget() -> None:
    _cached.clear()
