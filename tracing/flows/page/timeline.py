"""The flow page's timeline (one lane per system on one time axis) and each trace's waterfall."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from tracing.flows.expectations import duration_words
from tracing.flows.models import FlowStep
from tracing.flows.page.answers import said
from tracing.flows.selectors import DeadLetterRow, RecordRow
from tracing.flows.sentences import clock
from tracing.flows.status import FAILED_EVENTS, SPAN_STATUS_ERROR
from tracing.flows.stitching import SpanRow


@dataclass(frozen=True)
class Mark:
    kind: str  # span | record | dead_letter
    anchor: str
    style: str  # left (and width, for spans) in percent of the shared axis
    label: str
    failed: bool


@dataclass(frozen=True)
class Lane:
    system: str
    marks: list[Mark]


@dataclass(frozen=True)
class Bar:
    span: SpanRow
    anchor: str
    depth: int
    style: str  # offset and width in percent of the trace
    duration: str
    failed: bool
    skew: bool  # starts before its parent: the two clocks disagree


@dataclass(frozen=True)
class Trace:
    trace_id: str
    via: str
    bars: list[Bar]
    duration: str

    @property
    def errors(self) -> int:
        return sum(bar.failed for bar in self.bars)


# The timeline: one lane per system on one time axis.


def timeline_axis(
    spans: list[SpanRow], records: list[RecordRow], letters: list[DeadLetterRow]
) -> tuple[datetime, datetime] | None:
    times = [s.start_time for s in spans] + [s.end_time for s in spans]
    times += [r.occurred_at for r in records] + [d.last_failed_at for d in letters]
    times += [r.finished_at or r.sent_at or r.requested_at for d in letters for r in d.replays]
    return (min(times), max(times)) if times else None


def _percent(at: datetime, axis: tuple[datetime, datetime]) -> float:
    start, end = axis
    width = (end - start).total_seconds() or 1.0
    return min(100.0, max(0.0, (at - start).total_seconds() / width * 100))


def timeline_lanes(
    spans: list[SpanRow], records: list[RecordRow], letters: list[DeadLetterRow],
    steps: list[FlowStep], now: datetime,
) -> list[Lane]:  # fmt: skip
    axis = timeline_axis(spans, records, letters)
    if axis is None:
        return []
    marks: dict[str, list[Mark]] = defaultdict(list)
    for span in spans:
        marks[span.service_name].append(_span_mark(span, axis, now))
    for record in records:
        left = f"left: {_percent(record.occurred_at, axis):.2f}%"
        failed = record.event in FAILED_EVENTS
        marks[record.system].append(
            Mark("record", f"record-{record.id}", left, said(record, now), failed)
        )
    for letter in letters:
        left = f"left: {_percent(letter.last_failed_at, axis):.2f}%"
        label = f"dead letter {letter.id} · {letter.attempts} attempts · {letter.error}"
        marks[letter.system].append(
            Mark("dead_letter", f"dead-letter-{letter.id}", left, label, True)
        )
        for replay in letter.replays:
            at = replay.finished_at or replay.sent_at or replay.requested_at
            left = f"left: {_percent(at, axis):.2f}%"
            label = f"replay of dead letter {letter.id} · {replay.state.replace('_', ' ')}"
            marks[letter.system].append(
                Mark("replay", f"dead-letter-{letter.id}", left, label, replay.state == "failed")
            )
    # Systems in the order the definition meets them, then any others by name.
    order = {
        system: index for index, system in enumerate(step.system.name for step in reversed(steps))
    }
    ranked = sorted(marks, key=lambda system: (-order.get(system, -1), system))
    return [Lane(system, marks[system]) for system in ranked]


def _span_mark(span: SpanRow, axis: tuple[datetime, datetime], now: datetime) -> Mark:
    left, right = _percent(span.start_time, axis), _percent(span.end_time, axis)
    failed = span.status_code == SPAN_STATUS_ERROR
    label = f"{span.service_name} · {span.name} · {_duration(span.duration_ns)} · {clock(span.start_time, now)}"
    label += f" · error: {span.status_message}" if failed else ""
    style = f"left: {left:.2f}%; width: {max(right - left, 0.4):.2f}%"
    return Mark("span", _span_anchor(span), style, label, failed)


def timeline_ticks(axis: tuple[datetime, datetime] | None) -> list[tuple[str, datetime]]:
    if axis is None:
        return []
    start, end = axis
    if start == end:
        return [("left: 0%", start)]
    return [
        (f"left: {share * 100:.0f}%", start + (end - start) * share)
        for share in (0, 0.25, 0.5, 0.75, 1)
    ]


# Each trace's waterfall: spans under their parents, bars placed within the trace.


def _span_anchor(span: SpanRow) -> str:
    return f"span-{span.trace_id.hex()}-{span.span_id.hex()}"


def trace_waterfalls(traces: dict[bytes, str], spans: list[SpanRow]) -> list[Trace]:
    by_trace: dict[bytes, list[SpanRow]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    never = datetime.max.replace(tzinfo=UTC)  # a trace with no span of this flow goes last
    ordered = sorted(traces, key=lambda t: min((s.start_time for s in by_trace[t]), default=never))
    return [_trace_view(trace, traces[trace], by_trace[trace]) for trace in ordered]


def _trace_view(trace_id: bytes, via: str, spans: list[SpanRow]) -> Trace:
    if not spans:
        return Trace(trace_id.hex(), via, [], "")
    start, end = min(s.start_time for s in spans), max(s.end_time for s in spans)
    total = (end - start).total_seconds() or 1.0
    by_id = {span.span_id: span for span in spans}
    bars = []
    for span, depth in _tree(spans):
        offset = (span.start_time - start).total_seconds() / total * 100
        width = max(span.duration_ns / 1e9 / total * 100, 0.4)
        parent = by_id.get(span.parent_span_id) if span.parent_span_id else None
        bars.append(Bar(
            span=span, anchor=_span_anchor(span), depth=min(depth, 12),
            style=f"margin-left: {offset:.2f}%; width: {min(width, 100 - offset):.2f}%",
            duration=_duration(span.duration_ns), failed=span.status_code == SPAN_STATUS_ERROR,
            skew=parent is not None and span.start_time < parent.start_time,
        ))  # fmt: skip
    return Trace(trace_id.hex(), via, bars, _duration(int(total * 1e9)))


def _tree(spans: list[SpanRow]) -> list[tuple[SpanRow, int]]:
    """Depth-first, parents before children, siblings by start time; a span whose parent is
    not in this part of the trace is a root (as is one caught in a loop of bad parent IDs)."""
    ids = {span.span_id for span in spans}
    children: dict[bytes, list[SpanRow]] = defaultdict(list)
    roots = []
    for span in sorted(spans, key=lambda s: s.start_time):
        if span.parent_span_id in ids and span.parent_span_id != span.span_id:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    ordered: list[tuple[SpanRow, int]] = []
    seen: set[bytes] = set()
    for root in [*roots, *spans]:
        stack = [(root, 0)]
        while stack:
            span, depth = stack.pop()
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            ordered.append((span, depth))
            stack += [(child, depth + 1) for child in reversed(children[span.span_id])]
    return ordered


def _duration(nanoseconds: int) -> str:
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1_000_000:.3g} ms"
    if nanoseconds < 60_000_000_000:
        return f"{nanoseconds / 1_000_000_000:.3g} s"
    return duration_words(nanoseconds // 1_000_000_000)
