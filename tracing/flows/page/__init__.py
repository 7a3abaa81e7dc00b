"""What the flow page shows, read from `flow_detail`: the answers per message, the step
strip, the timeline lanes, the span waterfalls and the (masked) records.

Nothing here recomputes the flow's status; it arranges the facts the status came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from tracing.flows.detail import FlowDetail, Owner
from tracing.flows.masking import (
    Shown,
    headers_shown,
    payload_shown,
)
from tracing.flows.models import FlowInstance, FlowStep
from tracing.flows.page.answers import Message, messages_answered
from tracing.flows.page.timeline import (
    Lane,
    Trace,
    timeline_axis,
    timeline_lanes,
    timeline_ticks,
    trace_waterfalls,
)
from tracing.flows.selectors import DeadLetterRow, RecordRow

FINAL = frozenset({"completed", "failed", "partial"})


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
    # "Was anyone alerted?": the incidents that covered this flow (alerts fill it in).
    incidents: list[Any] = field(default_factory=list)

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
        messages=messages_answered(facts.records, facts.dead_letters, definition_steps, now),
        lanes=timeline_lanes(facts.spans, facts.records, facts.dead_letters, definition_steps, now),
        ticks=timeline_ticks(timeline_axis(facts.spans, facts.records, facts.dead_letters)),
        traces=trace_waterfalls(facts.traces, facts.spans),
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


def _record_view(record: RecordRow, *, unmasked: bool) -> Record:
    return Record(
        row=record,
        anchor=f"record-{record.id}",
        payload=payload_shown(record.payload, record.content_type, unmasked=unmasked),
        headers=headers_shown(record.headers, unmasked=unmasked),
    )
