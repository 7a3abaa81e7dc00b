"""Who is sending, how much: one counter row per sender, stream and minute, for the dashboard.

Counted after the rows are stored, never inside the ingest transaction: every request of a
busy sender updates the same row of the current minute, and in autocommit its lock lasts for
that one statement only. A count lost to a database hiccup is a dashboard figure a little low,
never a refused batch, so errors are logged and swallowed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import Error, connection

from tracing.ingest.models import SenderMinute

log = logging.getLogger(__name__)

_UPSERT = f"""
    INSERT INTO {SenderMinute._meta.db_table} (sender, stream, minute, accepted)
    VALUES (%s, %s, date_trunc('minute', %s::timestamptz), %s)
    ON CONFLICT (sender, stream, minute)
    DO UPDATE SET accepted = {SenderMinute._meta.db_table}.accepted + EXCLUDED.accepted
"""  # noqa: S608 - the table name is ours, every value a parameter


def sender_activity_count(*, sender: str, stream: str, accepted: int, at: datetime) -> None:
    """Add `accepted` rows to the sender's count for the minute of `at` (0 still says it sent)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_UPSERT, [sender, stream, at, accepted])
    except Error:
        log.exception("ingest: sender activity not counted", extra={"sender": sender})


# The dashboard reads the last minutes; a week is kept for the curious, then forgotten.
ACTIVITY_KEPT = timedelta(days=7)


def sender_activity_forget(*, now: datetime) -> int:
    """Drop counter rows older than a week; the number dropped."""
    deleted, _ = SenderMinute.objects.filter(minute__lt=now - ACTIVITY_KEPT).delete()
    return deleted
