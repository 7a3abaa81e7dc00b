"""Per flow definition over a window: counts by status, the funnel, SLA compliance, last run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, Prefetch, Q, QuerySet, Subquery

from tracing.flows.dashboard.hours import completed_counts, started_groups
from tracing.flows.dashboard.windows import STATUS_WORDS, STATUSES, Window
from tracing.flows.expectations import duration_words
from tracing.flows.models import FlowDefinition, FlowInstance, FlowStep


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


def started_in(version_ids: list[int], window: Window) -> QuerySet[FlowInstance]:
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
    """Counts by status and the funnel, from the instances started in the window grouped by
    status and steps done (a window holds few such groups, whatever its length)."""
    steps = list(definition.steps.all())
    groups = [_Group(*group) for group in started_groups(version_ids, window)]
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


def stuck_at(key: str, after: list[str]) -> Q:
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
    """Of the instances that completed in the window, how many missed no deadline."""
    name_of = {vid: s.name for s in summaries for vid in s.version_ids}
    tally: dict[str, tuple[int, int]] = {}
    for definition_id, (finished, within) in completed_counts(list(name_of), window).items():
        before = tally.get(name_of[definition_id], (0, 0))
        tally[name_of[definition_id]] = (before[0] + finished, before[1] + within)
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


def flows_exist() -> bool:
    return FlowInstance.objects.exists()
