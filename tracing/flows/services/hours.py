"""The dashboard's hourly counts (FlowHour, FlowCompletedHour), moved as instances change.

`flows_recompute` reads what each instance counted as before it saves the new summary, and
passes both here in the same transaction: each hour's counts go down by the old and up by
the new. The flows' advisory locks keep two recomputes of one flow apart, so the old is
really what the counts hold; additions commute, so two recomputes of different flows in the
same hour need no more than the row lock their upserts take.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

from tracing.flows.arrays import text_array
from tracing.flows.models import FlowInstance

StartedKey = tuple[int, datetime, str, tuple[str, ...]]  # definition, hour, status, steps done
CompletedKey = tuple[int, datetime]  # definition, hour


@dataclass(frozen=True)
class Counted:
    """What of an instance the hourly counts hold."""

    correlation_id: str
    definition_id: int | None
    started_at: datetime
    status: str
    steps_done: tuple[str, ...]
    completed_at: datetime | None
    deadline_missed: bool


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def counted_now(cursor: Any, correlation_ids: Collection[str]) -> dict[str, Counted]:
    """The instances as they are stored (call it with the flows locked)."""
    cursor.execute(
        """
        SELECT correlation_id, definition_id, started_at, status, steps_done, completed_at,
               deadline_missed
        FROM flows_flowinstance WHERE correlation_id = ANY(%s::text[])
        """,
        [text_array(correlation_ids)],
    )
    return {
        row[0]: Counted(row[0], row[1], row[2], row[3], tuple(row[4]), row[5], row[6])
        for row in cursor.fetchall()
    }


def counted(instance: FlowInstance) -> Counted:
    return Counted(
        instance.correlation_id, instance.definition_id, instance.started_at, instance.status,
        tuple(instance.steps_done), instance.completed_at, instance.deadline_missed,
    )  # fmt: skip


def flow_hours_shift(*, before: Iterable[Counted], after: Iterable[Counted]) -> None:
    """Take the old instances out of their hours and put the new ones in."""
    started: Counter[StartedKey] = Counter()
    finished: Counter[CompletedKey] = Counter()
    within: Counter[CompletedKey] = Counter()
    for sign, instances in ((-1, before), (1, after)):
        for instance in instances:
            if instance.definition_id is None:
                continue  # no definition: no dashboard row counts it
            key = (instance.definition_id, hour_of(instance.started_at))
            started[(*key, instance.status, instance.steps_done)] += sign
            if instance.status == FlowInstance.Status.COMPLETED and instance.completed_at:
                done = (instance.definition_id, hour_of(instance.completed_at))
                finished[done] += sign
                within[done] += sign * (not instance.deadline_missed)
    with connection.cursor() as cursor:
        _started_add(cursor, {key: n for key, n in started.items() if n})
        _completed_add(
            cursor, {k: (finished[k], within[k]) for k in finished if finished[k] or within[k]}
        )


def _started_add(cursor: Any, deltas: dict[StartedKey, int]) -> None:
    keys = sorted(deltas)  # one order for every writer: two summarizers cannot deadlock
    if not keys:
        return
    cursor.execute(
        """
        INSERT INTO flows_flowhour (definition_id, hour, status, steps_done, instances)
        SELECT definition, hour, status, string_to_array(done, ','), instances
        FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::int[])
            AS delta(definition, hour, status, done, instances)
        ON CONFLICT (definition_id, hour, status, steps_done)
        DO UPDATE SET instances = flows_flowhour.instances + EXCLUDED.instances
        """,
        [
            [key[0] for key in keys], [key[1] for key in keys], [key[2] for key in keys],
            [",".join(key[3]) for key in keys], [deltas[key] for key in keys],
        ],
    )  # fmt: skip
    cursor.execute(
        """
        DELETE FROM flows_flowhour WHERE instances = 0
        AND (definition_id, hour) IN (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))
        """,
        [[key[0] for key in keys], [key[1] for key in keys]],
    )


def _completed_add(cursor: Any, deltas: dict[CompletedKey, tuple[int, int]]) -> None:
    keys = sorted(deltas)
    if not keys:
        return
    cursor.execute(
        """
        INSERT INTO flows_flowcompletedhour (definition_id, hour, finished, within)
        SELECT * FROM unnest(%s::bigint[], %s::timestamptz[], %s::int[], %s::int[])
        ON CONFLICT (definition_id, hour) DO UPDATE
        SET finished = flows_flowcompletedhour.finished + EXCLUDED.finished,
            within = flows_flowcompletedhour.within + EXCLUDED.within
        """,
        [
            [key[0] for key in keys], [key[1] for key in keys],
            [deltas[key][0] for key in keys], [deltas[key][1] for key in keys],
        ],
    )  # fmt: skip
    cursor.execute(
        """
        DELETE FROM flows_flowcompletedhour WHERE finished = 0
        AND (definition_id, hour) IN (SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))
        """,
        [[key[0] for key in keys], [key[1] for key in keys]],
    )
