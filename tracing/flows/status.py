"""A flow's status and its "stopped at" sentence, worked out from facts alone.

Pure: it takes the flow's facts, its definition's steps and `now`, touches no database,
and is what both the summarizer and beat's stalled check call.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from tracing.flows.sentences import (
    clock,
    say_completed,
    say_failed,
    say_in_progress,
    say_partial,
    say_stalled,
    why_failed,
)

if TYPE_CHECKING:
    from tracing.flows.models import FlowStep

# The record events that mean a step did not happen.
FAILED_EVENTS = frozenset({"failed", "dead_lettered"})
# Dead letters nobody has dealt with yet: they are still the flow's latest word.
OPEN_DEAD_LETTER_STATES = frozenset({"new", "replay_requested", "in_doubt", "poison"})
SPAN_STATUS_ERROR = 2


@dataclass(frozen=True)
class Fact:
    """One thing that happened to the flow: a span, an audit record or a dead letter."""

    at: datetime
    kind: str  # "span" | "record" | "dead_letter"
    system: str
    name: str  # span name, record step, or the dead letter's message ID
    event: str = ""  # record event; "error" for an error span; dead letter state
    failed: bool = False
    error: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    counts: tuple[int, int] | None = None  # (expected, processed)

    @property
    def http_status(self) -> int | None:
        value = self.attributes.get("http.response.status_code")
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


@dataclass
class StepState:
    key: str
    title: str
    system: str
    optional: bool = False
    state: str = "waiting"  # done | failed | overdue | pending | waiting | skipped
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    ready_at: datetime | None = None
    due_at: datetime | None = None
    late: bool = False
    backwards: bool = False  # done before the step it follows: the clocks disagree
    failure: Fact | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title, "system": self.system, "state": self.state, "count": self.count,
            "first_at": _iso(self.first_at), "last_at": _iso(self.last_at), "due_at": _iso(self.due_at),
            "late": self.late, "backwards": self.backwards,
            "error": self.failure.error if self.failure else "",
        }  # fmt: skip


@dataclass
class Summary:
    status: str
    sentence: str
    started_at: datetime
    last_activity_at: datetime
    completed_at: datetime | None = None
    stopped_at: str = ""
    last_step: str = ""
    due_at: datetime | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    deadline_missed: bool = False


def step_matches(match: dict[str, Any], fact: Fact) -> bool:
    """Does this fact show the step happening (or failing, for a failure fact)?"""
    if "span" in match:
        wanted = match.get("attributes") or {}
        return (
            fact.kind == "span"
            and fact.name == match["span"]
            and all(str(fact.attributes.get(key)) == str(value) for key, value in wanted.items())
        )
    record = match.get("record") or {}
    return fact.kind == "record" and fact.name == record.get("step")


def step_done_by(step: FlowStep, fact: Fact) -> bool:
    if not step_matches(step.match, fact) or fact.failed:
        return False
    wanted_event = (step.match.get("record") or {}).get("event")
    return wanted_event is None or fact.event == wanted_event


def _step_failed_by(step: FlowStep, fact: Fact) -> bool:
    """A failure of this step, or in its system while the step is awaited (a dead letter or
    an error span does not name the step a definition calls it)."""
    if not fact.failed:
        return False
    return fact.system == step.system.name or step_matches(step.match, fact)


def summarize(
    *, facts: list[Fact], steps: list[FlowStep] | None, starts_with: str, now: datetime
) -> Summary:
    """The status and sentence of one flow; `steps` None when no definition matches it."""
    ordered = sorted(facts, key=lambda fact: fact.at)
    started_at, last_at = ordered[0].at, ordered[-1].at
    if steps is None:
        return _without_definition(ordered, started_at, last_at, now)
    start = _start_time(ordered, steps, starts_with) or started_at
    states = _step_states(ordered, steps, start, now)
    summary = Summary(
        status="in_progress", sentence="", started_at=start, last_activity_at=last_at, steps=states
    )
    summary.deadline_missed = any(
        state.late or state.state == "overdue" for state in states.values()
    )
    done = [state for state in states.values() if state.state == "done"]
    if done:
        summary.last_step = max(done, key=lambda state: state.last_at or start).key
    _decide(summary, ordered, steps, now)
    return summary


def _start_time(facts: list[Fact], steps: list[FlowStep], starts_with: str) -> datetime | None:
    first = next((step for step in steps if step.key == starts_with), None)
    if first is None:
        return None
    return next((fact.at for fact in facts if step_done_by(first, fact)), None)


def _step_states(
    facts: list[Fact], steps: list[FlowStep], start: datetime, now: datetime
) -> dict[str, StepState]:
    # Only facts of the kind and name a step matches can do it; look those up, rather than
    # testing every fact against every step (most of a flow's spans match none).
    named: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for fact in facts:
        named[(fact.kind, fact.name)].append(fact)
    failed = [fact for fact in facts if fact.failed]
    states: dict[str, StepState] = {}
    for step in steps:  # ordered by position: a step's `after` come before it
        state = StepState(
            key=step.key, title=step.title, system=step.system.name, optional=step.optional
        )
        done = [fact for fact in named.get(_matched_name(step), []) if step_done_by(step, fact)]
        state.count = len(done)
        if done:
            state.first_at, state.last_at = done[0].at, done[-1].at
        state.ready_at = _ready_at(step, states, start)
        if step.deadline_seconds and state.ready_at is not None:
            origin = start if step.deadline_from == "start" else state.ready_at
            state.due_at = origin + timedelta(seconds=step.deadline_seconds)
        failures = [fact for fact in failed if _step_failed_by(step, fact)]
        _step_state_decide(state, step, failures, now)
        states[step.key] = state
    return states


def _matched_name(step: FlowStep) -> tuple[str, str]:
    """(kind, name) of the facts that can match the step: see step_matches."""
    if "span" in step.match:
        return ("span", step.match["span"])
    return ("record", (step.match.get("record") or {}).get("step", ""))


def _ready_at(step: FlowStep, states: dict[str, StepState], start: datetime) -> datetime | None:
    """When the step could begin: its `after` steps done (optional ones may be skipped)."""
    if not step.after:
        return start
    before = [states[key] for key in step.after if key in states]
    if any(state.state != "done" and not state.optional for state in before):
        return None
    times = [state.last_at for state in before if state.last_at is not None]
    return max(times) if times else start


def _step_state_decide(
    state: StepState, step: FlowStep, failures: list[Fact], now: datetime
) -> None:
    if state.count >= max(step.occurs_min, 1):
        state.state = "done"
        state.late = (
            state.due_at is not None
            and state.first_at is not None
            and state.first_at > state.due_at
        )
        state.backwards = (
            state.ready_at is not None and state.first_at is not None and state.first_at < state.ready_at
            and bool(step.after)
        )  # fmt: skip
        return
    recent = [fact for fact in failures if state.last_at is None or fact.at > state.last_at]
    if recent and state.ready_at is not None:
        state.state, state.failure = "failed", recent[-1]
    elif state.ready_at is None:
        state.state = "waiting"
    elif state.due_at is not None and now > state.due_at:
        state.state = "overdue"
    else:
        state.state = "pending"
    if step.optional and state.state in {"waiting", "overdue"}:
        state.state = "skipped"


def _decide(summary: Summary, facts: list[Fact], steps: list[FlowStep], now: datetime) -> None:
    states = summary.steps
    by_key = {step.key: step for step in steps}
    latest = facts[-1]
    failed = [state for state in states.values() if state.state == "failed"]
    if _is_failure(latest) and failed:
        say_failed(summary, failed[-1], by_key, now)
        return
    for state in failed:  # something came after the failure: the step is awaited again
        _awaited(state, now)
    skipped = _went_past(states, by_key)
    short = _short_count(facts)
    if skipped or short:
        say_partial(summary, skipped, short, now)
        return
    required = [state for key, state in states.items() if not by_key[key].optional]
    if all(state.state == "done" for state in required):
        say_completed(summary, now)
        return
    expected = _expected_next(states)
    if expected is None:
        summary.sentence = "In progress: no step of the definition has been seen yet."
        return
    summary.stopped_at, summary.due_at = expected.key, expected.due_at
    if expected.state == "overdue":
        say_stalled(summary, expected, by_key, now)
    else:
        say_in_progress(summary, expected, now)


def _awaited(state: StepState, now: datetime) -> None:
    """A failed step that is no longer the flow's last word: pending, or overdue past its deadline."""
    state.state = "overdue" if state.due_at is not None and now > state.due_at else "pending"


def _short_count(facts: list[Fact]) -> Fact | None:
    """A step whose latest counts say fewer items were processed than expected (a re-run that
    processed everything clears it)."""
    latest: dict[tuple[str, str], Fact] = {}
    for fact in facts:
        if fact.counts:
            latest[(fact.system, fact.name)] = fact
    return next(
        (fact for fact in latest.values() if fact.counts and fact.counts[1] < fact.counts[0]), None
    )


def _is_failure(fact: Fact) -> bool:
    if fact.kind == "dead_letter":
        return fact.event in OPEN_DEAD_LETTER_STATES
    return fact.failed


def _went_past(
    states: dict[str, StepState], by_key: dict[str, FlowStep]
) -> tuple[StepState, StepState] | None:
    """A step done although a required step it follows never was: (the step, the skipped one)."""
    for key, state in states.items():
        if state.state != "done":
            continue
        for before in by_key[key].after:
            skipped = states.get(before)
            if skipped and skipped.state != "done" and not by_key[before].optional:
                return state, skipped
    return None


def _expected_next(states: dict[str, StepState]) -> StepState | None:
    ready = [state for state in states.values() if state.state in {"overdue", "pending"}]
    if not ready:
        return None
    far = datetime.max.replace(tzinfo=timezone.get_current_timezone())
    return min(ready, key=lambda state: (state.state != "overdue", state.due_at or far))


def _without_definition(
    facts: list[Fact], started_at: datetime, last_at: datetime, now: datetime
) -> Summary:
    latest = facts[-1]
    if _is_failure(latest):
        sentence = f"Failed: {why_failed(latest, now)}. No flow definition matches this flow."
        status = "failed"
    else:
        sentence = (
            f"Last seen: {latest.name} ({latest.system}) at {clock(latest.at, now)}. "
            "No flow definition matches this flow, so no step is expected."
        )
        status = "in_progress"
    return Summary(
        status=status, sentence=sentence, started_at=started_at, last_activity_at=last_at
    )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
