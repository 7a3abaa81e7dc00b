"""A window's counts: its hours from the hourly tables the summarizer keeps, the part of an
hour at its start from the instances themselves.

The hour `now` is in comes from its hourly row too, less the instances past `now` (a
sender's clock may run ahead): the summarizer keeps that row as current as the instances,
in the same transaction, and counting the instances of a busy current hour one by one made
the page slower the more orders the hour held (177 ms in-process with 45,851 in it; 43 ms
from its row).

Every figure equals what counting the instances over the whole window gives; the hourly
tables only spare reading every instance of a week on each load of the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q, Sum

from tracing.flows.dashboard.windows import Window
from tracing.flows.models import FlowCompletedHour, FlowHour, FlowInstance
from tracing.flows.services.hours import hour_of

HOUR = timedelta(hours=1)
Group = tuple[str, frozenset[str], int]  # status, steps done, instances


def hours_kept(window: Window) -> tuple[datetime, datetime] | None:
    """[first, last): the hours the hourly tables give: from the first that starts inside
    the window to the end of the hour `now` is in."""
    first = hour_of(window.start)
    first += HOUR if first < window.start else timedelta()
    last = hour_of(window.now) + HOUR
    return (first, last) if first < last else None


def _before(field: str, window: Window, hours: tuple[datetime, datetime] | None) -> Q:
    """What the window holds that the hours do not: all of it, or the part before them."""
    if hours is None:
        return Q(**{f"{field}__gte": window.start, f"{field}__lte": window.now})
    return Q(**{f"{field}__gte": window.start, f"{field}__lt": hours[0]})


def _beyond(field: str, window: Window, hours: tuple[datetime, datetime]) -> Q:
    """What the last hour holds past the window's end."""
    return Q(**{f"{field}__gt": window.now, f"{field}__lt": hours[1]})


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """The rows and the instances taken back out of them, read as of one moment: between two
    statements the summarizer may commit a flow past `now`, which the rows read first would
    not hold, and a count would go below what is there."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def started_groups(version_ids: list[int], window: Window) -> list[Group]:
    """Instances started in the window, by status and the steps they did."""
    with _one_snapshot():
        return _started_groups(version_ids, window)


def _started_groups(version_ids: list[int], window: Window) -> list[Group]:
    hours = hours_kept(window)
    groups = _started_counted(version_ids, _before("started_at", window, hours), sign=1)
    if hours is not None:
        whole = (
            FlowHour.objects.filter(
                definition_id__in=version_ids, hour__gte=hours[0], hour__lt=hours[1]
            )
            .values_list("status", "steps_done")
            .annotate(total=Sum("instances"))
            .order_by()
        )
        groups += [(status, frozenset(done), count) for status, done, count in whole]
        groups += _started_counted(version_ids, _beyond("started_at", window, hours), sign=-1)
    return groups


def _started_counted(version_ids: list[int], started: Q, *, sign: int) -> list[Group]:
    counted = (
        FlowInstance.objects.filter(started, definition_id__in=version_ids)
        .values_list("status", "steps_done")
        .annotate(instances=Count("pk"))
        .order_by()
    )
    return [(status, frozenset(done), sign * count) for status, done, count in counted]


def completed_counts(version_ids: list[int], window: Window) -> dict[int, tuple[int, int]]:
    """Per definition version: instances completed in the window, and how many of them
    within all their deadlines (the instances through the partial index on completed_at)."""
    with _one_snapshot():
        rows = _completed_rows(version_ids, window)
    counted: dict[int, tuple[int, int]] = {}
    for definition_id, finished, within in rows:
        before = counted.get(definition_id, (0, 0))
        counted[definition_id] = (before[0] + finished, before[1] + within)
    # A version whose only completions in the last hour lie past `now` has none to show.
    return {definition_id: both for definition_id, both in counted.items() if both[0] > 0}


def _completed_rows(version_ids: list[int], window: Window) -> list[tuple[int, int, int]]:
    hours = hours_kept(window)
    rows = _completed_counted(version_ids, _before("completed_at", window, hours), sign=1)
    if hours is not None:
        rows += (
            FlowCompletedHour.objects.filter(
                definition_id__in=version_ids, hour__gte=hours[0], hour__lt=hours[1]
            )
            .values_list("definition_id")
            .annotate(finished=Sum("finished"), within=Sum("within"))
            .order_by()
        )
        rows += _completed_counted(version_ids, _beyond("completed_at", window, hours), sign=-1)
    return rows


def _completed_counted(
    version_ids: list[int], completed: Q, *, sign: int
) -> list[tuple[int, int, int]]:
    counted = (
        FlowInstance.objects.filter(
            completed, status=FlowInstance.Status.COMPLETED, definition_id__in=version_ids
        )
        .values_list("definition_id")
        .annotate(finished=Count("pk"), within=Count("pk", filter=Q(deadline_missed=False)))
        .order_by()
    )
    return [
        (definition, sign * finished, sign * within) for definition, finished, within in counted
    ]
