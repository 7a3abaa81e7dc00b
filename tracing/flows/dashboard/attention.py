"""What needs attention now: stalled and failed flows, missing runs, the stuck behind a funnel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from tracing.flows.dashboard.definitions import DefinitionSummary, FunnelStep, started_in, stuck_at
from tracing.flows.dashboard.windows import Window
from tracing.flows.models import FlowInstance, Missing

T = TypeVar("T")


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
    stuck = started_in(definition.version_ids, window).filter(stuck_at(step.key, list(step.after)))
    rows = list(stuck.order_by("started_at", "pk")[:limit])
    total = len(rows) if len(rows) < limit else stuck.count()
    return Stuck(definition, step, Shortlist(rows, total))
