"""A window's counts: its whole hours from the hourly tables the summarizer keeps, the
parts of an hour at either edge from the instances themselves.

Every figure equals what counting the instances over the whole window gives; the hourly
tables only spare reading every instance of a week on each load of the page.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum

from tracing.flows.dashboard.windows import Window
from tracing.flows.models import FlowCompletedHour, FlowHour, FlowInstance
from tracing.flows.services.hours import hour_of

HOUR = timedelta(hours=1)
Group = tuple[str, frozenset[str], int]  # status, steps done, instances


def whole_hours(window: Window) -> tuple[datetime, datetime] | None:
    """[first, last): the hours that lie wholly inside the window, if any."""
    first = hour_of(window.start)
    first += HOUR if first < window.start else timedelta()
    last = hour_of(window.now)
    return (first, last) if first < last else None


def _edges(field: str, window: Window, hours: tuple[datetime, datetime] | None) -> Q:
    if hours is None:
        return Q(**{f"{field}__gte": window.start, f"{field}__lte": window.now})
    first, last = hours
    return Q(**{f"{field}__gte": window.start, f"{field}__lt": first}) | Q(
        **{f"{field}__gte": last, f"{field}__lte": window.now}
    )


def started_groups(version_ids: list[int], window: Window) -> list[Group]:
    """Instances started in the window, by status and the steps they did."""
    hours = whole_hours(window)
    edges = (
        FlowInstance.objects.filter(
            _edges("started_at", window, hours), definition_id__in=version_ids
        )
        .values_list("status", "steps_done")
        .annotate(instances=Count("pk"))
        .order_by()
    )
    groups = [(status, frozenset(done), count) for status, done, count in edges]
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
    return groups


def completed_counts(version_ids: list[int], window: Window) -> dict[int, tuple[int, int]]:
    """Per definition version: instances completed in the window, and how many of them
    within all their deadlines (the edges through the partial index on completed_at)."""
    hours = whole_hours(window)
    counted: dict[int, tuple[int, int]] = {}
    edges = (
        FlowInstance.objects.filter(
            _edges("completed_at", window, hours),
            status=FlowInstance.Status.COMPLETED,
            definition_id__in=version_ids,
        )
        .values_list("definition_id")
        .annotate(finished=Count("pk"), within=Count("pk", filter=Q(deadline_missed=False)))
        .order_by()
    )
    rows = list(edges)
    if hours is not None:
        rows += (
            FlowCompletedHour.objects.filter(
                definition_id__in=version_ids, hour__gte=hours[0], hour__lt=hours[1]
            )
            .values_list("definition_id")
            .annotate(finished=Sum("finished"), within=Sum("within"))
            .order_by()
        )
    for definition_id, finished, within in rows:
        before = counted.get(definition_id, (0, 0))
        counted[definition_id] = (before[0] + finished, before[1] + within)
    return counted
