"""What the flow page shows, read from `flow_detail`: the answers per message, the step
strip, the timeline lanes, the span waterfalls and the (masked) records.

Nothing here recomputes the flow's status; it arranges the facts the status came from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString
from jsonschema import validators
from jsonschema.exceptions import best_match

from tracing.flows.expectations import duration_words
from tracing.flows.masking import (
    Shown,
    headers_shown,
    is_json,
    json_document,
    payload_shown,
)
from tracing.flows.models import FlowInstance, FlowStep
from tracing.flows.selectors import DeadLetterRow, FlowDetail, Owner, RecordRow
from tracing.flows.status import FAILED_EVENTS, SPAN_STATUS_ERROR, clock
from tracing.flows.stitching import SpanRow

FINAL = frozenset({"completed", "failed", "partial"})
UNKNOWN = "unknown: no record of this step"
VALIDATION_STEPS = ("valid",)  # a step whose name says it validates: "order.validate"
TRANSFORM_STEPS = ("transform", "map")
DELIVERY_EVENTS = frozenset({"delivered", "failed"})


@dataclass(frozen=True)
class Answer:
    question: str
    mark: str  # yes | no | unknown
    text: str
    tone: str = ""  # good | bad | neutral: how the mark is coloured


@dataclass
class Message:
    """One message of the flow: its records and dead letters, and support's questions."""

    message_id: str | None
    title: str
    records: list[RecordRow] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def first_at(self) -> datetime:
        records = [record.occurred_at for record in self.records]
        return min(records + [letter.last_failed_at for letter in self.dead_letters])

    @property
    def systems(self) -> list[str]:
        return sorted({r.system for r in self.records} | {d.system for d in self.dead_letters})


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


@dataclass(frozen=True)
class Record:
    row: RecordRow
    anchor: str
    payload: Shown | None
    headers: dict[str, Any]


@dataclass
class FlowPage:
    instance: FlowInstance
    sentence: SafeString
    owner: Owner | None
    steps: list[dict[str, Any]]
    messages: list[Message]
    lanes: list[Lane]
    ticks: list[tuple[str, datetime]]  # (style, time) along the shared axis
    traces: list[Trace]
    records: list[Record]
    dead_letters: list[DeadLetterRow]
    business_keys: list[tuple[str, str]]
    unmasked: bool
    now: datetime

    @property
    def final(self) -> bool:
        return self.instance.status in FINAL

    @property
    def version(self) -> str:
        return self.instance.updated_at.isoformat()

    @property
    def payloads_shown(self) -> bool:
        return any(record.payload is not None for record in self.records)


def flow_page_read(detail: FlowDetail, *, unmasked: bool, now: datetime) -> FlowPage:
    instance, facts = detail.instance, detail.facts
    definition_steps = _definition_steps(instance)
    return FlowPage(
        instance=instance,
        sentence=_sentence(instance),
        owner=detail.owner,
        steps=[_step_view(step, instance.stopped_at) for step in detail.steps],
        messages=_messages(facts.records, facts.dead_letters, definition_steps, now),
        lanes=_lanes(facts.spans, facts.records, facts.dead_letters, definition_steps, now),
        ticks=_ticks(_axis(facts.spans, facts.records, facts.dead_letters)),
        traces=_traces(facts.traces, facts.spans),
        records=[_record_view(record, unmasked=unmasked) for record in facts.records],
        dead_letters=facts.dead_letters,
        business_keys=sorted(facts.business_keys),
        unmasked=unmasked,
        now=now,
    )


def _definition_steps(instance: FlowInstance) -> list[FlowStep]:
    if instance.definition_id is None:
        return []
    return list(
        FlowStep.objects.filter(definition_id=instance.definition_id).select_related("system")
    )


def _sentence(instance: FlowInstance) -> SafeString:
    """The stored sentence, escaped, with the title of the step it stopped at in bold."""
    title = (instance.steps.get(instance.stopped_at) or {}).get("title", "")
    before, found, after = instance.sentence.partition(title) if title else ("", "", "")
    if not found:
        return format_html("{}", instance.sentence)
    return format_html("{}<strong>{}</strong>{}", before, title, after)


def _step_view(step: dict[str, Any], stopped_at: str) -> dict[str, Any]:
    times = {key: _parsed(step.get(key)) for key in ("first_at", "last_at", "due_at")}
    return {
        "title": step["key"], "system": "", "state": "waiting", "count": 0, "late": False,
        "backwards": False, "error": "", **step, **times, "stopped": step["key"] == stopped_at,
    }  # fmt: skip


def _parsed(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# Per message: the questions support asks, answered from the records and dead letters.


def _messages(
    records: list[RecordRow], letters: list[DeadLetterRow], steps: list[FlowStep], now: datetime
) -> list[Message]:
    by_id: dict[str, Message] = {}
    alone = [Message(None, "", records=[r]) for r in records if r.message_id is None]
    for record in records:
        if record.message_id is not None:
            by_id.setdefault(record.message_id, Message(record.message_id, "")).records += [record]
    for letter in letters:
        if not letter.message_id:  # keyed by its payload's digest: a message of its own
            alone.append(Message(None, "", dead_letters=[letter]))
            continue
        by_id.setdefault(letter.message_id, Message(letter.message_id, "")).dead_letters += [letter]
    messages = sorted([*by_id.values(), *alone], key=lambda message: message.first_at)
    by_record_step = {_record_step(step): step for step in steps if _record_step(step)}
    for message in messages:
        message.title = _message_title(message, by_record_step)
        message.answers = _answers(message, by_record_step, now)
    return messages


def _record_step(step: FlowStep) -> str:
    return str((step.match.get("record") or {}).get("step", ""))


def _message_title(message: Message, steps: dict[str, FlowStep]) -> str:
    if not message.records:
        return f"Message to {message.dead_letters[-1].system}"
    latest = message.records[-1]
    step = steps.get(latest.step)
    return step.title if step else latest.step


def _answers(message: Message, steps: dict[str, FlowStep], now: datetime) -> list[Answer]:
    valid = _verdict("Valid?", message, "validated", VALIDATION_STEPS, now)
    return [
        _received(message, now),
        valid if valid.mark != "unknown" else _schema_checked(message, steps) or valid,
        _verdict("Transformed?", message, "transformed", TRANSFORM_STEPS, now),
        _target_available(message, now),
        _retried(message),
        Answer("Was anyone alerted?", "unknown", UNKNOWN),
        _replay_safety(message),
    ]


def _replay_safety(message: Message) -> Answer:
    """From the verdict stored with the latest replay (or dry run) of the message's dead letter."""
    question = "Can it be replayed safely?"
    replays = sorted(
        (replay for letter in message.dead_letters for replay in letter.replays),
        key=lambda replay: replay.requested_at,
    )
    if not replays:
        if message.dead_letters:
            return Answer(
                question, "unknown", "not checked yet: a replay request or dry run checks it"
            )
        return Answer(question, "unknown", UNKNOWN)
    verdict = replays[-1].verdict
    problems = [
        verdict[key] for key in ("already_delivered", "stale", "poison") if verdict.get(key)
    ]
    if problems:
        return _judged(question, False, "; ".join(problems))
    if verdict.get("needs_approval"):
        reasons = ", ".join(verdict["needs_approval"])
        return _judged(question, True, f"yes, with a second operator's approval ({reasons})")
    return _judged(question, True, "yes: the target deduplicates by Idempotency-Key")


def _judged(question: str, good: bool, text: str) -> Answer:
    return Answer(question, "yes" if good else "no", text, "good" if good else "bad")


def _named(step: str, words: tuple[str, ...]) -> bool:
    return any(word in step.lower() for word in words)


def _said(record: RecordRow, now: datetime) -> str:
    error = f": {record.error}" if record.error else ""
    event = record.event.replace("_", "-")
    return f"{record.step} {event} in {record.system} at {clock(record.occurred_at, now)}{error}"


def _received(message: Message, now: datetime) -> Answer:
    received = [record for record in message.records if record.event == "received"]
    if received:
        return _judged("Received?", True, _said(received[-1], now))
    if message.records:
        return _judged(
            "Received?", True, f"no receipt recorded, but {_said(message.records[0], now)}"
        )
    at = clock(message.dead_letters[0].first_failed_at, now)
    return _judged("Received?", True, f"the runtime held it: it first failed at {at}")


def _verdict(
    question: str, message: Message, good_event: str, step_words: tuple[str, ...], now: datetime
) -> Answer:
    """The latest record that says the step happened, or failed at a step named for it."""
    said = [
        r for r in message.records
        if r.event == good_event or (r.event in FAILED_EVENTS and _named(r.step, step_words))
    ]  # fmt: skip
    if not said:
        return Answer(question, "unknown", UNKNOWN)
    return _judged(question, said[-1].event == good_event, _said(said[-1], now))


def _schema_checked(message: Message, steps: dict[str, FlowStep]) -> Answer | None:
    """The step's payload_schema against the latest JSON payload that has one."""
    for record in reversed(message.records):
        step = steps.get(record.step)
        if step is None or step.payload_schema is None or record.payload is None:
            continue
        document = json_document(record.payload, record.content_type)
        if not is_json(document):
            continue
        schema = step.payload_schema
        error = best_match(validators.validator_for(schema)(schema).iter_errors(document))
        if error is None:
            return _judged("Valid?", True, f"the payload matches the schema of {step.title}")
        # The path and the rule broken, never the value: support must not see it unmasked.
        where = "/".join(str(part) for part in error.absolute_path) or "the document"
        text = f"the payload breaks the schema of {step.title}: {where} fails “{error.validator}”"
        return _judged("Valid?", False, text)
    return None


def _is_delivery(record: RecordRow) -> bool:
    """A try to hand the message to its target (not a failure to validate or transform it)."""
    if record.event == "delivered":
        return True
    return record.event in FAILED_EVENTS and not _named(
        record.step, VALIDATION_STEPS + TRANSFORM_STEPS
    )


def _target_available(message: Message, now: datetime) -> Answer:
    question = "Was the target available?"
    tried: list[RecordRow | DeadLetterRow] = [r for r in message.records if _is_delivery(r)]
    tried += message.dead_letters
    if not tried:
        return Answer(question, "unknown", UNKNOWN)
    outcome = max(
        tried, key=lambda t: t.last_failed_at if isinstance(t, DeadLetterRow) else t.occurred_at
    )
    if isinstance(outcome, RecordRow):
        return _judged(question, outcome.event == "delivered", _said(outcome, now))
    at, error = clock(outcome.last_failed_at, now), f": {outcome.error}" if outcome.error else ""
    return _judged(question, False, f"dead-lettered by {outcome.system} at {at}{error}")


def _retried(message: Message) -> Answer:
    deliveries = sum(r.event in DELIVERY_EVENTS and _is_delivery(r) for r in message.records)
    attempts = max([deliveries, *(letter.attempts for letter in message.dead_letters)])
    replays = sum(r.event == "replayed" for r in message.records)
    replayed = f"; replayed {replays} times" if replays else ""
    if attempts == 0:
        return Answer("Retried?", "unknown", UNKNOWN)
    if attempts == 1:
        return Answer("Retried?", "no", f"one attempt{replayed}", "neutral")
    return Answer("Retried?", "yes", f"{attempts} attempts{replayed}", "neutral")


# The timeline: one lane per system on one time axis.


def _axis(
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


def _lanes(
    spans: list[SpanRow], records: list[RecordRow], letters: list[DeadLetterRow],
    steps: list[FlowStep], now: datetime,
) -> list[Lane]:  # fmt: skip
    axis = _axis(spans, records, letters)
    if axis is None:
        return []
    marks: dict[str, list[Mark]] = defaultdict(list)
    for span in spans:
        marks[span.service_name].append(_span_mark(span, axis, now))
    for record in records:
        left = f"left: {_percent(record.occurred_at, axis):.2f}%"
        failed = record.event in FAILED_EVENTS
        marks[record.system].append(
            Mark("record", f"record-{record.id}", left, _said(record, now), failed)
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


def _ticks(axis: tuple[datetime, datetime] | None) -> list[tuple[str, datetime]]:
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


def _traces(traces: dict[bytes, str], spans: list[SpanRow]) -> list[Trace]:
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


def _record_view(record: RecordRow, *, unmasked: bool) -> Record:
    return Record(
        row=record,
        anchor=f"record-{record.id}",
        payload=payload_shown(record.payload, record.content_type, unmasked=unmasked),
        headers=headers_shown(record.headers, unmasked=unmasked),
    )
