"""The stopped-at sentences a support person reads aloud, from a flow's summary and facts.

Pure, like `status`: the words only, no decisions.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from tracing.flows.expectations import duration_words

if TYPE_CHECKING:
    from tracing.flows.models import FlowStep
    from tracing.flows.status import Fact, StepState, Summary


def say_failed(
    summary: Summary, state: StepState, by_key: dict[str, FlowStep], now: datetime
) -> None:
    failure = state.failure
    assert failure is not None
    summary.status, summary.stopped_at = "failed", state.key
    summary.sentence = f"Stopped at {state.title} ({state.system}): {why_failed(failure, now)}.{_overdue(state, by_key, now)}"


def why_failed(failure: Fact, now: datetime) -> str:
    at = clock(failure.at, now)
    error = f" — {failure.error}" if failure.error else ""
    if failure.kind == "dead_letter":
        return f"the message to {failure.system} was dead-lettered at {at}{error}"
    if failure.kind == "record":
        return f"{failure.system} reported {failure.name} {failure.event.replace('_', '-')} at {at}{error}"
    status = f" (HTTP {failure.http_status})" if failure.http_status else ""
    return f"{failure.name} failed in {failure.system} at {at}{status}{error}"


def _overdue(state: StepState, by_key: dict[str, FlowStep], now: datetime) -> str:
    if state.due_at is None or now <= state.due_at:
        return ""
    late = duration_words(int((now - state.due_at).total_seconds()))
    return f" {late} overdue (due {_deadline_words(by_key[state.key], by_key)})."


def _deadline_words(step: FlowStep, by_key: dict[str, FlowStep]) -> str:
    deadline = duration_words(step.deadline_seconds or 0)
    if step.deadline_from == "start" or not step.after:
        return f"{deadline} after the flow started"
    titles = " and ".join(by_key[key].title for key in step.after if key in by_key)
    return f"{deadline} after {titles}"


def say_stalled(
    summary: Summary, state: StepState, by_key: dict[str, FlowStep], now: datetime
) -> None:
    summary.status = "stalled"
    last = summary.steps.get(summary.last_step)
    since = (
        f"nothing since {last.title} at {clock(last.last_at, now)}"
        if last and last.last_at
        else "not started"
    )
    summary.sentence = (
        f"Stopped at {state.title} ({state.system}): {since}.{_overdue(state, by_key, now)}"
    )


def say_in_progress(summary: Summary, state: StepState, now: datetime) -> None:
    last = summary.steps.get(summary.last_step)
    done = (
        f"{last.title} ({last.system}) at {clock(last.last_at, now)}"
        if last and last.last_at
        else "started"
    )
    due = f", due by {clock(state.due_at, now)}" if state.due_at else ""
    summary.sentence = f"In progress: {done}; next {state.title} ({state.system}){due}."


def say_completed(summary: Summary, now: datetime) -> None:
    last = summary.steps[summary.last_step]
    assert last.last_at is not None
    summary.status, summary.completed_at = "completed", last.last_at
    took = duration_words(int((last.last_at - summary.started_at).total_seconds()))
    summary.sentence = f"Completed at {clock(last.last_at, now)}: {last.title} ({last.system}), {took} after it started."


def say_partial(
    summary: Summary,
    skipped: tuple[StepState, StepState] | None,
    short: Fact | None,
    now: datetime,
) -> None:
    summary.status = "partial"
    if short is not None and short.counts is not None:
        expected, processed = short.counts
        summary.sentence = (
            f"Partial: {short.name} ({short.system}) processed {processed:,} of {expected:,} items "
            f"at {clock(short.at, now)}."
        )
        return
    assert skipped is not None
    went, missed = skipped
    summary.stopped_at = missed.key
    summary.sentence = f"Partial: went on to {went.title} ({went.system}) without {missed.title} ({missed.system})."


def clock(at: datetime | None, now: datetime) -> str:
    """14:02 in the console's time zone; a weekday and date too when it is not `now`'s day."""
    if at is None:
        return "an unknown time"
    local = timezone.localtime(at)
    if local.date() == timezone.localtime(now).date():
        return f"{local:%H:%M}"
    return f"{local:%a %d %b %H:%M}"
