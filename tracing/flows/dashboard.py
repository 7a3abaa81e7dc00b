"""The dashboard's reads: what happened to each flow in a window, what needs attention now.

Everything comes from the summary tables (flow instances, missing runs, dead letters and the
per-minute sender counts), through their indexes: instances of a definition by start time
(definition_id, started_at), problems by status and age (status, last_activity_at). Every
function takes `now`, so a test can look at the dashboard of any moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from django.db import connection
from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from tracing.flows.expectations import duration_words
from tracing.flows.models import FlowDefinition, FlowInstance, FlowStep, Missing
from tracing.ingest.models import DeadLetter, SenderMinute

STATUSES = [status for status, _ in FlowInstance.Status.choices]
STATUS_WORDS = {
    "completed": "Completed",
    "in_progress": "In progress",
    "stalled": "Stalled",
    "failed": "Failed",
    "partial": "Partial",
}
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
T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    key: str  # "hour", "today", "week": what the page's selector sends
    label: str  # "Last hour": the selector's words
    words: str  # "in the last hour": how a sentence says it
    start: datetime
    now: datetime


WINDOW_KEYS = ("hour", "today", "week")
DEFAULT_WINDOW = "today"


def dashboard_window(key: str, *, now: datetime) -> Window:
    """The window the selector names; an unknown key means today."""
    if key == "hour":
        return Window("hour", "Last hour", "in the last hour", now - timedelta(hours=1), now)
    if key == "week":
        return Window("week", "7 days", "in the last 7 days", now - timedelta(days=7), now)
    # Today in the console's time zone: the day the people reading it are living.
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window("today", "Today", "today", midnight, now)


# Flow definitions: counts, funnel, SLA, last run


@dataclass(frozen=True)
class FunnelStep:
    key: str
    title: str
    system: str
    reached: int  # instances started in the window that did this step
    after: tuple[str, ...]  # the keys of the steps it follows
    before: str  # "Order created (ERP)": the same in words, "" for a first step
    ready: int  # instances that did all the steps it follows
    stuck: int  # ... and not this one (yet)


@dataclass(frozen=True)
class Compliance:
    finished: int
    within: int  # finished without missing any deadline

    @property
    def percent(self) -> str:
        # Rounded down: one late order in ten thousand must not show as 100%.
        return f"{math.floor(self.within * 1000 / self.finished) / 10:.1f}"


@dataclass(frozen=True)
class LastRun:
    correlation_id: str
    status: str
    started_at: datetime
    age: str  # "3 h 10 min"

    @property
    def status_words(self) -> str:
        return STATUS_WORDS[self.status].lower()


@dataclass
class DefinitionSummary:
    name: str
    title: str
    scheduled: bool
    counts: dict[str, int]  # every status, 0 when none
    funnel: list[FunnelStep]
    compliance: Compliance | None = None  # None: nothing finished in the window
    last_run: LastRun | None = None  # scheduled definitions only
    version_ids: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status_counts(self) -> list[tuple[str, str, int]]:
        """(status, its words, how many), in the order of STATUSES."""
        return [(status, STATUS_WORDS[status], self.counts[status]) for status in STATUSES]


def definitions_summary(*, window: Window) -> list[DefinitionSummary]:
    """Each current flow definition over the window, all its versions together."""
    current = _current_definitions()
    versions = _version_ids([definition.name for definition in current])
    summaries = [_definition_summary(d, versions[d.name], window) for d in current]
    _compliance_add(summaries, window)
    _last_runs_add([s for s in summaries if s.scheduled], window.now)
    return summaries


def _current_definitions() -> list[FlowDefinition]:
    steps = FlowStep.objects.select_related("system").order_by("position")
    return list(
        FlowDefinition.objects.filter(is_current=True)
        .prefetch_related(Prefetch("steps", queryset=steps))
        .order_by("name")
    )


def _version_ids(names: list[str]) -> dict[str, list[int]]:
    versions: dict[str, list[int]] = {name: [] for name in names}
    for version_id, name in FlowDefinition.objects.filter(name__in=names).values_list("id", "name"):
        versions[name].append(version_id)
    return versions


def _started_in(version_ids: list[int], window: Window) -> QuerySet[FlowInstance]:
    return FlowInstance.objects.filter(
        definition_id__in=version_ids, started_at__gte=window.start, started_at__lte=window.now
    )


def _predecessors(step: FlowStep, steps: list[FlowStep]) -> list[FlowStep]:
    by_key = {other.key: other for other in steps}
    return [by_key[key] for key in step.after if key in by_key]


@dataclass(frozen=True)
class _Group:
    """Instances that share a status and the same steps done; a window holds few such groups."""

    status: str
    done: frozenset[str]
    instances: int


def _definition_summary(
    definition: FlowDefinition, version_ids: list[int], window: Window
) -> DefinitionSummary:
    """Counts by status and the funnel, in one pass over the instances started in the window.

    Grouping by the steps done, not counting each step with a filter, keeps the pass cheap:
    hashing one short array per row instead of testing it once per step.
    """
    steps = list(definition.steps.all())
    groups = [
        _Group(row["status"], frozenset(row["steps_done"]), row["instances"])
        for row in _started_in(version_ids, window)
        .values("status", "steps_done")
        .annotate(instances=Count("pk"))
        .order_by()
    ]
    counts = dict.fromkeys(STATUSES, 0)
    for group in groups:
        counts[group.status] += group.instances
    return DefinitionSummary(
        name=definition.name,
        title=definition.title,
        scheduled=definition.kind == FlowDefinition.Kind.SCHEDULED,
        counts=counts,
        funnel=[_funnel_step(step, steps, groups) for step in steps],
        version_ids=version_ids,
    )


def _stuck_at(key: str, after: list[str]) -> Q:
    return Q(steps_done__contains=after) & ~Q(steps_done__contains=[key])


def _funnel_step(step: FlowStep, steps: list[FlowStep], groups: list[_Group]) -> FunnelStep:
    """How many did this step; and, of those that did the steps it follows, how many not."""
    before = _predecessors(step, steps)
    after = {other.key for other in before}
    ready = [group for group in groups if before and after <= group.done]
    return FunnelStep(
        key=step.key,
        title=step.title,
        system=step.system.name,
        after=tuple(other.key for other in before),
        reached=sum(group.instances for group in groups if step.key in group.done),
        before=" and ".join(f"{other.title} ({other.system.name})" for other in before),
        ready=sum(group.instances for group in ready),
        stuck=sum(group.instances for group in ready if step.key not in group.done),
    )


def _compliance_add(summaries: list[DefinitionSummary], window: Window) -> None:
    """Of the instances that completed in the window, how many missed no deadline.

    A completed instance's last activity is never before its completion, so the
    (status, last_activity_at) index narrows the rows before completed_at is checked.
    """
    name_of = {vid: s.name for s in summaries for vid in s.version_ids}
    rows = (
        FlowInstance.objects.filter(
            status=FlowInstance.Status.COMPLETED,
            last_activity_at__gte=window.start,
            completed_at__gte=window.start,
            completed_at__lte=window.now,
            definition_id__in=list(name_of),
        )
        .values("definition_id")
        .annotate(finished=Count("pk"), within=Count("pk", filter=Q(deadline_missed=False)))
        .order_by()
    )
    tally: dict[str, tuple[int, int]] = {}
    for row in rows:
        finished, within = tally.get(name_of[row["definition_id"]], (0, 0))
        tally[name_of[row["definition_id"]]] = (finished + row["finished"], within + row["within"])
    for summary in summaries:
        if summary.name in tally:
            summary.compliance = Compliance(*tally[summary.name])


def _last_runs_add(summaries: list[DefinitionSummary], now: datetime) -> None:
    """The latest run of each scheduled definition: one index probe per version."""
    latest = (
        FlowInstance.objects.filter(definition_id=OuterRef("pk"), started_at__lte=now)
        .order_by("-started_at")
        .values("pk")[:1]
    )
    version_ids = [vid for summary in summaries for vid in summary.version_ids]
    per_version = FlowDefinition.objects.filter(pk__in=version_ids).values(last=Subquery(latest))
    runs = (
        FlowInstance.objects.filter(pk__in=per_version)
        .only("correlation_id", "status", "started_at", "definition_id")
        .order_by("started_at")
    )
    name_of = {vid: s.name for s in summaries for vid in s.version_ids}
    last_of = {name_of[run.definition_id]: run for run in runs if run.definition_id}
    for summary in summaries:
        run = last_of.get(summary.name)
        if run is not None:
            age = duration_words(max(0, int((now - run.started_at).total_seconds())))
            summary.last_run = LastRun(run.correlation_id, run.status, run.started_at, age)


# What needs attention now


@dataclass(frozen=True)
class Shortlist(Generic[T]):
    rows: list[T]
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


_TROUBLE_FIELDS = (
    "correlation_id", "status", "sentence", "last_activity_at", "started_at",
    "definition__name", "definition__title",
)  # fmt: skip


def flows_in_trouble(status: str, *, limit: int) -> Shortlist[FlowInstance]:
    """Stalled or failed flows, whatever the window: oldest first, they waited longest."""
    flows = FlowInstance.objects.filter(status=status)
    rows = list(
        flows.select_related("definition")
        .only(*_TROUBLE_FIELDS)
        .order_by("last_activity_at", "pk")[:limit]
    )
    return Shortlist(rows, len(rows) if len(rows) < limit else flows.count())


def missing_open(*, limit: int) -> Shortlist[Missing]:
    """Expected runs and volumes that did not come and have not come since."""
    missing = Missing.objects.filter(cleared_at=None)
    rows = list(missing.order_by("raised_at", "pk")[:limit])
    return Shortlist(rows, len(rows) if len(rows) < limit else missing.count())


@dataclass(frozen=True)
class Stuck:
    definition: DefinitionSummary
    step: FunnelStep
    flows: Shortlist[FlowInstance]


def flows_stuck(
    definition: DefinitionSummary, step_key: str, *, window: Window, limit: int
) -> Stuck | None:
    """The instances started in the window that did the steps before `step_key` but not it:
    the list behind a funnel's "6 not there yet". None if no such step follows another."""
    step = next((s for s in definition.funnel if s.key == step_key and s.after), None)
    if step is None:
        return None
    stuck = _started_in(definition.version_ids, window).filter(
        _stuck_at(step.key, list(step.after))
    )
    rows = list(stuck.order_by("started_at", "pk")[:limit])
    total = len(rows) if len(rows) < limit else stuck.count()
    return Stuck(definition, step, Shortlist(rows, total))


# Dead letters and senders


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


def flows_exist() -> bool:
    return FlowInstance.objects.exists()
