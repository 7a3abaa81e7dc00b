"""Dead letters waiting per system, and what each sender delivers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count

from tracing.flows.expectations import duration_words
from tracing.ingest.models import DeadLetter, SenderMinute

# The dead letters someone still has to act on, or that are on their way out again.
DEAD_LETTER_STATE_WORDS = {
    "new": "New",
    "replay_requested": "Replay requested",
    "in_doubt": "In doubt",
    "poison": "Poison",
}
DEAD_LETTER_OPEN = list(DEAD_LETTER_STATE_WORDS)
SENDER_RATE_MINUTES = 5
STREAM_WORDS = {"spans": "spans", "records": "audit records", "dead_letters": "dead letters"}


@dataclass(frozen=True)
class DeadLetterDepth:
    system: str
    by_state: dict[str, int]  # every open state, 0 when none

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def dead_letter_depth() -> list[DeadLetterDepth]:
    """Open dead letters per system and state, deepest system first."""
    rows = (
        DeadLetter.objects.filter(state__in=DEAD_LETTER_OPEN)
        .values_list("system", "state")
        .annotate(letters=Count("pk"))
        .order_by()
    )
    depth: dict[str, dict[str, int]] = {}
    for system, state, letters in rows:
        depth.setdefault(system, dict.fromkeys(DEAD_LETTER_OPEN, 0))[state] = letters
    systems = [DeadLetterDepth(system, by_state) for system, by_state in depth.items()]
    return sorted(systems, key=lambda d: (-d.total, d.system))


@dataclass(frozen=True)
class SenderRate:
    sender: str
    stream: str
    recent: int  # accepted over the last few minutes
    per_second: float
    last_minute: datetime  # the minute it last delivered in
    last_age: str  # "under a minute", "3 h 10 min"

    @property
    def stream_words(self) -> str:
        return STREAM_WORDS.get(self.stream, self.stream)

    @property
    def per_second_words(self) -> str:
        if self.per_second >= 100:
            return f"{self.per_second:,.0f}"
        if self.per_second >= 1 or self.per_second == 0:
            return f"{self.per_second:.1f}"
        return f"{self.per_second:.2f}" if self.per_second >= 0.01 else "under 0.01"


# Each (sender, stream) pair once, found by skipping along the primary key instead of
# reading every minute ever counted; then two index probes per pair.
_SENDER_RATES = f"""
    WITH RECURSIVE pairs(sender, stream) AS (
        (SELECT sender, stream FROM {SenderMinute._meta.db_table} ORDER BY sender, stream LIMIT 1)
        UNION ALL
        SELECT next.sender, next.stream FROM pairs, LATERAL (
            SELECT sender, stream FROM {SenderMinute._meta.db_table} m
            WHERE (m.sender, m.stream) > (pairs.sender, pairs.stream)
            ORDER BY sender, stream LIMIT 1
        ) next
    )
    SELECT pairs.sender, pairs.stream,
        (SELECT max(minute) FROM {SenderMinute._meta.db_table} m
         WHERE m.sender = pairs.sender AND m.stream = pairs.stream AND m.minute <= %(now)s),
        (SELECT coalesce(sum(accepted), 0)::bigint FROM {SenderMinute._meta.db_table} m
         WHERE m.sender = pairs.sender AND m.stream = pairs.stream
           AND m.minute >= %(since)s AND m.minute <= %(now)s)
    FROM pairs ORDER BY pairs.sender, pairs.stream
"""  # noqa: S608 - the table name is ours, every value a parameter


def sender_rates(*, now: datetime) -> list[SenderRate]:
    """Per sender and stream: accepted per second over the last minutes, and when it last sent.

    The counts are per minute, so the rate covers the last few whole minutes plus the
    current one so far, divided by exactly that much time.
    """
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=SENDER_RATE_MINUTES - 1)
    elapsed = (now - since).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute(_SENDER_RATES, {"now": now, "since": since})
        rows = cursor.fetchall()
    return [
        SenderRate(
            sender=sender,
            stream=stream,
            recent=recent,
            per_second=recent / elapsed,
            last_minute=last_minute,
            last_age=duration_words(max(0, int((now - last_minute).total_seconds()))),
        )
        for sender, stream, last_minute, recent in rows
        if last_minute is not None
    ]
