"""Non-events: a scheduled run that did not come, a window whose volume fell short.

Nothing crashes when the stock export stops on Friday night; beat runs this every 15 s
and turns the silence into a `Missing` row with a sentence, cleared when a run arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Min, OuterRef, Subquery
from django.utils import timezone

from tracing.flows.expectations import runs_missed, volume_shortfall, volume_windows
from tracing.flows.models import BusinessCalendar, FlowDefinition, FlowInstance, Missing

# How far back beat looks for closed volume windows it has not judged yet.
VOLUME_LOOKBACK = timedelta(days=1)
# A window is judged this long after it closes, so instances still on their way are counted.
VOLUME_SETTLE = timedelta(minutes=2)


def flows_missing_check(*, now: datetime) -> int:
    """Raise, update or clear every current definition's missing runs; the number newly raised."""
    raised = 0
    for definition in FlowDefinition.objects.filter(is_current=True).prefetch_related(
        "steps__system"
    ):
        with transaction.atomic():
            if definition.kind == FlowDefinition.Kind.SCHEDULED:
                raised += _schedule_check(definition, now)
            if definition.volume:
                raised += _volume_check(definition, now)
    return raised


def _zone() -> ZoneInfo:
    return ZoneInfo(str(timezone.get_current_timezone()))


def _first_created(definition: FlowDefinition) -> datetime:
    first = FlowDefinition.objects.filter(name=definition.name).aggregate(at=Min("created_at"))
    return first["at"] or definition.created_at


def _schedule_check(definition: FlowDefinition, now: datetime) -> int:
    last_run_at = _last_run_at(definition.name)
    missed = runs_missed(
        definition=definition, last_run_at=last_run_at, since=_first_created(definition), now=now,
        tz=_zone(),
    )  # fmt: skip
    open_rows = Missing.objects.select_for_update().filter(
        definition_name=definition.name, kind=Missing.Kind.SCHEDULE, cleared_at=None
    )
    current = open_rows.first()
    if missed is None:
        open_rows.update(cleared_at=now)
        return 0
    if current is not None:
        current.count, current.sentence, current.definition = (
            missed.missed,
            missed.sentence,
            definition,
        )
        current.save(update_fields=["count", "sentence", "definition"])
        return 0
    Missing.objects.create(
        definition=definition, definition_name=definition.name, kind=Missing.Kind.SCHEDULE,
        window_start=missed.last_run_at or _first_created(definition), overdue_since=missed.overdue_since,
        count=missed.missed, sentence=missed.sentence, raised_at=now,
    )  # fmt: skip
    return 1


def _last_run_at(name: str) -> datetime | None:
    """The latest start under any version of the definition: one index probe per version.
    As one MAX over the instances joined to their definitions, PostgreSQL scanned every
    instance of every definition, every 15 s (0.3-2 s on the bench's 220,000 flows)."""
    latest = (
        FlowInstance.objects.filter(definition_id=OuterRef("pk"))
        .order_by("-started_at")
        .values("started_at")[:1]
    )
    versions = FlowDefinition.objects.filter(name=name).annotate(last_run_at=Subquery(latest))
    return max(filter(None, versions.values_list("last_run_at", flat=True)), default=None)


def _volume_check(definition: FlowDefinition, now: datetime) -> int:
    volume = definition.volume or {}
    calendar = None
    if volume.get("calendar"):
        calendar = BusinessCalendar.objects.filter(name=volume["calendar"]).first()
    after = max(now - VOLUME_LOOKBACK, _first_created(definition))
    windows = volume_windows(
        per_seconds=volume["per_seconds"], calendar=calendar, after=after, until=now - VOLUME_SETTLE
    )
    zone = ZoneInfo(calendar.timezone) if calendar else _zone()
    judged = set(
        Missing.objects.filter(
            definition_name=definition.name, kind=Missing.Kind.VOLUME, window_start__gte=after
        ).values_list("window_start", flat=True)
    )
    first_step = next(s for s in definition.steps.all() if s.key == definition.starts_with)
    raised = 0
    for window in windows:
        if window.start in judged:
            continue
        count = FlowInstance.objects.filter(
            definition__name=definition.name,
            started_at__gte=window.start,
            started_at__lt=window.end,
        ).count()
        sentence = volume_shortfall(
            definition=definition, window=window, count=count, system=first_step.system.name,
            tz=zone, now=now,
        )  # fmt: skip
        if sentence is None:
            continue
        Missing.objects.create(
            definition=definition, definition_name=definition.name, kind=Missing.Kind.VOLUME,
            window_start=window.start, window_end=window.end, overdue_since=window.end, count=count,
            sentence=sentence, raised_at=now,
        )  # fmt: skip
        raised += 1
    return raised
