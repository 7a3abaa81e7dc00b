"""Non-events: the scheduled run that did not come, the orders that did not arrive.

Pure functions over flow definitions and business calendars, without the database: the caller
loads the rows and the last-seen times and passes `now`, so a worker never needs a patched
clock and the rules can be tested on unsaved instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from tracing.flows.models import BusinessCalendar, FlowDefinition

# Walking cron fire times is the one loop whose length the data decides. A flow silent for
# this many runs has been dead long enough that "at least" tells a person all they need.
CRON_COUNT_LIMIT = 10_000
# Volume windows further back than this were alerted on (or not) long ago.
VOLUME_LOOKBACK = timedelta(days=7)
# Windows are counted in wall time from a Monday midnight: any window that divides a day then
# starts at every local midnight, and a weekly window runs Monday to Monday.
_WINDOW_EPOCH = datetime(1970, 1, 5)  # wall time: no zone on purpose
# documents.parse_hours stores "24:00" as 23:59:59, because a time of day cannot say midnight.
_END_OF_DAY = time(23, 59, 59)
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


@dataclass(frozen=True)
class MissedRuns:
    last_run_at: datetime | None  # start of the last run seen, None if never
    overdue_since: datetime  # when the first missed run was due + grace
    missed: int  # how many expected runs did not come (CRON_COUNT_LIMIT at most, for cron)
    sentence: str


@dataclass(frozen=True)
class VolumeWindow:
    start: datetime
    end: datetime


def duration_words(seconds: int) -> str:
    """11520 → "3 h 12 min": at most two adjacent units, rounded down so "overdue" never
    overstates; seconds only matter under a minute, where people say just that."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    if seconds < 60:
        return "under a minute"
    amounts = _unit_amounts(seconds)[:3]  # days, hours, minutes
    largest = next(index for index, (amount, _) in enumerate(amounts) if amount)
    return _join(amounts[largest : largest + 2])


def _interval_words(seconds: int) -> str:
    """900 → "15 min", 90 → "1 min 30 s": a schedule is stated exactly, never rounded."""
    return _join(_unit_amounts(seconds))


def _unit_amounts(seconds: int) -> list[tuple[int, str]]:
    amounts = []
    for unit, size in _UNITS:
        amount, seconds = divmod(seconds, size)
        amounts.append((amount, unit))
    return amounts


def _join(amounts: list[tuple[int, str]]) -> str:
    return " ".join(f"{amount} {unit}" for amount, unit in amounts if amount)


def _require_aware(at: datetime) -> None:
    # A naive time would silently be read in the server's zone, shifting every answer.
    if at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone")


# Scheduled flows


def runs_missed(
    *,
    definition: FlowDefinition,
    last_run_at: datetime | None,
    since: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> MissedRuns | None:
    """The runs of a scheduled flow that should have started by `now` (grace included) and
    did not, counted from the last run or, if it never ran, from `since` (its creation).

    An interval is counted from the last run itself; a cron expression is read in `tz`."""
    if definition.kind != FlowDefinition.Kind.SCHEDULED:
        raise ValueError(f"{definition.name} is not a scheduled flow")
    anchor = last_run_at if last_run_at is not None else since
    for moment in (anchor, now):
        _require_aware(moment)
    overdue_since, missed, expected = _missed_by_schedule(definition, anchor, now, tz)
    if missed == 0:
        return None
    runs = "1 run" if missed == 1 else f"{missed} runs"
    # Only the cron walk stops counting; an interval's count is exact however large.
    if not definition.every_seconds and missed >= CRON_COUNT_LIMIT:
        runs = f"at least {runs}"
    since_words = "no run since" if last_run_at is not None else "no run yet since"
    return MissedRuns(
        last_run_at=last_run_at,
        overdue_since=overdue_since,
        missed=missed,
        sentence=f"{definition.name}: {since_words} {anchor.astimezone(tz):%a %H:%M}"
        f" — expected {expected}; {runs} missed.",
    )


def _missed_by_schedule(
    definition: FlowDefinition, anchor: datetime, now: datetime, tz: ZoneInfo
) -> tuple[datetime, int, str]:
    """When the first run after `anchor` went missing, how many have, and the schedule in words."""
    grace = timedelta(seconds=definition.grace_seconds)
    # An interval wins when both are set, as the export writes it (services._flow_document).
    if definition.every_seconds:
        overdue_since, missed = _every_missed(anchor, definition.every_seconds, grace, now)
        return overdue_since, missed, f"every {_interval_words(definition.every_seconds)}"
    if definition.cron:
        overdue_since, missed = _cron_missed(anchor, definition.cron, grace, now, tz)
        return overdue_since, missed, f"on cron {definition.cron}"
    raise ValueError(f"{definition.name} has neither an interval nor a cron expression")


def _every_missed(
    anchor: datetime, every_seconds: int, grace: timedelta, now: datetime
) -> tuple[datetime, int]:
    every = timedelta(seconds=every_seconds)
    # Run k is missing once anchor + k*every + grace has passed: count the k >= 1 that have.
    missed = max(0, (now - anchor - grace) // every)
    return anchor + every + grace, missed


def _cron_missed(
    anchor: datetime, expression: str, grace: timedelta, now: datetime, tz: ZoneInfo
) -> tuple[datetime, int]:
    # croniter walks wall time in the zone it is given, so "0 6 * * 1-5" means 06:00 in tz,
    # through daylight-saving changes too.
    fire_times = croniter(expression, anchor.astimezone(tz))
    first_due = fire_times.get_next(datetime)
    due, missed = first_due, 0
    while due + grace <= now and missed < CRON_COUNT_LIMIT:
        missed += 1
        due = fire_times.get_next(datetime)
    return first_due + grace, missed


# Business calendars


def calendar_is_open(calendar: BusinessCalendar, at: datetime) -> bool:
    """Whether `at` falls on a working day that is not a holiday, between opening and closing,
    in the calendar's own time zone."""
    _require_aware(at)
    local = at.astimezone(ZoneInfo(calendar.timezone)).replace(tzinfo=None)
    hours = _opening_hours(calendar, local.date())
    return hours is not None and hours[0] <= local < hours[1]


def _opening_hours(calendar: BusinessCalendar, day: date) -> tuple[datetime, datetime] | None:
    """Opening and closing of `day` in wall time, None when the calendar is closed all day."""
    if day.weekday() not in calendar.working_days or day in calendar.holidays:
        return None
    return datetime.combine(day, calendar.opens), _closing(calendar, day)


def _closing(calendar: BusinessCalendar, day: date) -> datetime:
    if calendar.closes == _END_OF_DAY:
        return datetime.combine(day + timedelta(days=1), time(0))
    return datetime.combine(day, calendar.closes)


# Volume expectations


def volume_windows(
    *,
    per_seconds: int,
    calendar: BusinessCalendar | None,
    after: datetime,
    until: datetime,
) -> list[VolumeWindow]:
    """The windows that have closed by `until` and began at or after `after` (at most
    VOLUME_LOOKBACK back), and with a calendar only those wholly inside opening hours.

    Windows are cut in wall time in the calendar's zone (UTC without one), so a 1 h window
    starts on the hour even across a daylight-saving change: the wall hour that repeats in
    autumn is one window two hours long, the hour skipped in spring is no window."""
    if per_seconds < 1:
        raise ValueError(f"a volume window must last at least a second, not {per_seconds}")
    for moment in (after, until):
        _require_aware(moment)
    zone = ZoneInfo(calendar.timezone) if calendar is not None else ZoneInfo("UTC")
    after = max(after, until - VOLUME_LOOKBACK)
    walls = _window_walls(timedelta(seconds=per_seconds), after, until, zone)
    instants = _instants(walls, zone)
    return [
        VolumeWindow(start=start, end=end)
        for start_wall, end_wall, start, end in zip(
            walls, walls[1:], instants, instants[1:], strict=False
        )
        if after <= start < end <= until
        and (calendar is None or _inside_hours(calendar, start_wall, end_wall))
    ]


def _inside_hours(calendar: BusinessCalendar, start_wall: datetime, end_wall: datetime) -> bool:
    hours = _opening_hours(calendar, start_wall.date())
    return hours is not None and hours[0] <= start_wall and end_wall <= hours[1]


def _window_walls(
    per: timedelta, after: datetime, until: datetime, zone: ZoneInfo
) -> list[datetime]:
    """Window boundaries in wall time, from the one at or before `after` to the first at or
    after `until`."""
    first_wall = after.astimezone(zone).replace(tzinfo=None)
    last_wall = until.astimezone(zone).replace(tzinfo=None)
    wall = _WINDOW_EPOCH + (first_wall - _WINDOW_EPOCH) // per * per
    walls = [wall]
    while wall < last_wall:
        wall += per
        walls.append(wall)
    return walls


def _instants(walls: list[datetime], zone: ZoneInfo) -> list[datetime]:
    """Wall times to UTC instants that never go backwards."""
    # A repeated autumn wall time is taken at its first occurrence (fold=0). A spring wall
    # time that does not exist is mapped past the jump and would land after the next
    # boundary; no boundary may come later than the ones after it, which puts it at the jump.
    instants = [wall.replace(tzinfo=zone).astimezone(UTC) for wall in walls]
    for index in range(len(instants) - 2, -1, -1):
        instants[index] = min(instants[index], instants[index + 1])
    return instants


def volume_shortfall(
    *,
    definition: FlowDefinition,
    window: VolumeWindow,
    count: int,
    system: str,
    tz: ZoneInfo,
    now: datetime | None = None,
) -> str | None:
    """None when `count` keeps to the definition's volume, else the sentence that says what
    came and what was expected, e.g. "ERP sent 0 orders between 09:00 and 10:00; at least 20
    expected." The window's day is named unless it is the day of `now` (default: its end)."""
    volume = definition.volume or {}
    at_least, at_most = volume.get("at_least"), volume.get("at_most")
    if at_least is not None and count < at_least:
        expected = f"at least {at_least}"
    elif at_most is not None and count > at_most:
        expected = f"at most {at_most}"
    else:
        return None
    noun = volume.get("noun") or f"{definition.title} flows"
    between = _window_words(window, tz, now or window.end)
    return f"{system} sent {count} {noun} {between}; {expected} expected."


def _window_words(window: VolumeWindow, tz: ZoneInfo, now: datetime) -> str:
    start, end = window.start.astimezone(tz), window.end.astimezone(tz)
    start_words = (
        f"{start:%H:%M}" if start.date() == now.astimezone(tz).date() else f"{start:%a %H:%M}"
    )
    # A window ending at midnight or later ends on another day: say which.
    end_words = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%a %H:%M}"
    return f"between {start_words} and {end_words}"
