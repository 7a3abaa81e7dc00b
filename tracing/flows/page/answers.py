"""Per message of a flow: the questions support asks, answered from its records and dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from jsonschema import validators
from jsonschema.exceptions import best_match

from tracing.flows.masking import (
    is_json,
    json_document,
)
from tracing.flows.models import FlowStep
from tracing.flows.selectors import DeadLetterRow, RecordRow
from tracing.flows.sentences import clock
from tracing.flows.status import FAILED_EVENTS

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


def messages_answered(
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


def said(record: RecordRow, now: datetime) -> str:
    error = f": {record.error}" if record.error else ""
    event = record.event.replace("_", "-")
    return f"{record.step} {event} in {record.system} at {clock(record.occurred_at, now)}{error}"


def _received(message: Message, now: datetime) -> Answer:
    received = [record for record in message.records if record.event == "received"]
    if received:
        return _judged("Received?", True, said(received[-1], now))
    if message.records:
        return _judged(
            "Received?", True, f"no receipt recorded, but {said(message.records[0], now)}"
        )
    at = clock(message.dead_letters[0].first_failed_at, now)
    return _judged("Received?", True, f"the runtime held it: it first failed at {at}")


def _verdict(
    question: str, message: Message, good_event: str, step_words: tuple[str, ...], now: datetime
) -> Answer:
    """The latest record that says the step happened, or failed at a step named for it."""
    telling = [
        r for r in message.records
        if r.event == good_event or (r.event in FAILED_EVENTS and _named(r.step, step_words))
    ]  # fmt: skip
    if not telling:
        return Answer(question, "unknown", UNKNOWN)
    return _judged(question, telling[-1].event == good_event, said(telling[-1], now))


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
        return _judged(question, outcome.event == "delivered", said(outcome, now))
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
