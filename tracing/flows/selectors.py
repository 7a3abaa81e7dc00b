"""Reads of flows: the facts of a set of flows, found through their memberships.

The summarizer reads hundreds of flows at once and the flow page reads one; both go
through `flows_facts`, so the page shows exactly what the status was computed from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from console.rows import TIMESTAMPTZ, reads_cursor
from tracing.flows.arrays import ANY_BYTEA, ANY_TEXT, bytea_array, text_array
from tracing.flows.status import FAILED_EVENTS, OPEN_DEAD_LETTER_STATES, SPAN_STATUS_ERROR, Fact
from tracing.flows.stitching import WITHIN, SpanRow, json_value, spans_window, trace_part

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "start_time", "status_code", "status_message",
    "service_name", "attributes", "links", "correlation_id", "message_id", "business_keys", "kind",
    "end_time", "duration_ns", "events",
)  # fmt: skip
# What the status, stitching and business keys need of a span, in SpanRow's order: all the
# summarizer reads. Empty documents come back as NULL (nothing to decode), and attributes
# only where a status reads them: an error span's (its HTTP status) and those of spans a
# definition's step matches by name (and maybe attributes).
_STATUS_SPAN_SELECT = (
    "trace_id, span_id, parent_span_id, name, start_time, status_code, status_message, service_name,"
    " CASE WHEN status_code = 2 OR name = ANY(%s::text[]) THEN attributes END, NULLIF(links, '[]'),"
    " correlation_id, message_id, NULLIF(business_keys, '{}')"
)
_SPAN_JSON = frozenset({"attributes", "events", "links", "business_keys"})
_SPAN_IDS = frozenset({"trace_id", "span_id", "parent_span_id"})


@dataclass(slots=True)
class RecordRow:
    id: int
    record_id: str
    occurred_at: datetime
    system: str
    step: str
    event: str
    message_id: str | None
    correlation_id: str | None
    trace_id: bytes | None
    span_id: bytes | None
    business_keys: dict[str, str]
    error: str
    counts_expected: int | None
    counts_processed: int | None
    content_type: str
    headers: dict[str, Any]
    payload: bytes | None = None

    def fact(self) -> Fact:
        counts = None
        if self.counts_expected is not None and self.counts_processed is not None:
            counts = (self.counts_expected, self.counts_processed)
        return Fact(
            at=self.occurred_at, kind="record", system=self.system, name=self.step, event=self.event,
            failed=self.event in FAILED_EVENTS, error=self.error, counts=counts,
        )  # fmt: skip


@dataclass(slots=True)
class ReplayRow:
    """A replay of one of the flow's dead letters: its safety verdict and outcome."""

    id: str
    dead_letter_id: int
    state: str
    verdict: dict[str, Any]
    requested_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    outcome: str


@dataclass(slots=True)
class DeadLetterRow:
    id: int
    message_id: str
    correlation_id: str | None
    system: str
    error: str
    state: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    transport: str
    replays: list[ReplayRow] = field(default_factory=list)

    def fact(self) -> Fact:
        # A replayed, resolved or discarded dead letter no longer says the step failed.
        return Fact(
            at=self.last_failed_at, kind="dead_letter", system=self.system, name=self.message_id,
            event=self.state, failed=self.state in OPEN_DEAD_LETTER_STATES, error=self.error,
        )  # fmt: skip


@dataclass
class FlowFacts:
    correlation_id: str
    traces: dict[bytes, str] = field(default_factory=dict)  # trace → how it joined
    spans: list[SpanRow] = field(default_factory=list)
    records: list[RecordRow] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    # Message IDs of spans not read this time: those a span digest remembers.
    digest_message_ids: set[str] = field(default_factory=set)
    # Some trace of the flow shows only the flow's part of it (a batch shared with others).
    partial_traces: bool = False

    def facts(self) -> list[Fact]:
        return (
            [span_fact(span) for span in self.spans]
            + [record.fact() for record in self.records]
            + [letter.fact() for letter in self.dead_letters]
        )

    @property
    def span_message_ids(self) -> set[str]:
        return {span.message_id for span in self.spans if span.message_id} | self.digest_message_ids

    @property
    def message_ids(self) -> set[str]:
        found = {record.message_id for record in self.records if record.message_id}
        return self.span_message_ids | found

    @property
    def business_keys(self) -> set[tuple[str, str]]:
        found = {item for span in self.spans for item in span.business_keys.items()}
        return found | {item for record in self.records for item in record.business_keys.items()}


def span_fact(span: SpanRow) -> Fact:
    failed = span.status_code == SPAN_STATUS_ERROR
    return Fact(
        at=span.start_time, kind="span", system=span.service_name, name=span.name,
        event="error" if failed else "ok", failed=failed, error=span.status_message,
        attributes=span.attributes,
    )  # fmt: skip


def flows_facts(
    correlation_ids: Collection[str],
    *,
    payloads: bool = False,
    step_spans: Collection[str] | None = None,
) -> dict[str, FlowFacts]:
    """The flows' spans, records and dead letters. With `step_spans` (the span names the
    definitions' steps match) only what the status needs of each span, as the summarizer reads."""
    flows = {correlation: FlowFacts(correlation) for correlation in correlation_ids}
    if not flows:
        return flows
    with reads_cursor() as cursor:
        shared = _memberships_load(cursor, flows)
        traces = {trace for flow in flows.values() for trace in flow.traces}
        spans = (
            _spans_load(cursor, traces)
            if step_spans is None
            else _status_spans_load(cursor, traces, step_spans)
        )
        messages = {span.message_id for rows in spans.values() for span in rows if span.message_id}
        records = _records_load(cursor, flows, messages, payloads)
        _spans_assign(flows, spans, shared, records)
        _records_assign(flows, records)
        _dead_letters_assign(cursor, flows)
    return flows


def flows_records_and_dead_letters(
    traces: dict[str, dict[bytes, str]], span_messages: dict[str, set[str]]
) -> dict[str, FlowFacts]:
    """The flows' records and dead letters, as `flows_facts` finds them, for flows whose
    traces and span message IDs are known already (a span digest's): no span is read."""
    flows = {
        cid: FlowFacts(cid, traces=traces[cid], digest_message_ids=span_messages[cid])
        for cid in traces
    }
    if not flows:
        return flows
    with reads_cursor() as cursor:
        messages = {message for found in span_messages.values() for message in found}
        _records_assign(flows, _records_load(cursor, flows, messages, payloads=False))
        _dead_letters_assign(cursor, flows)
    return flows


def _memberships_load(cursor: Any, flows: dict[str, FlowFacts]) -> set[bytes]:
    """Fill each flow's traces; return the traces that more than one flow shares."""
    cursor.execute(
        "SELECT correlation_id, trace_id, via FROM flows_flowtrace WHERE correlation_id = ANY(%s::text[])",
        [text_array(flows)],
    )
    for correlation_id, trace_id, via in cursor.fetchall():
        flows[correlation_id].traces[bytes(trace_id)] = via
    traces = {trace for flow in flows.values() for trace in flow.traces}
    cursor.execute(
        """
        SELECT trace_id FROM flows_flowtrace WHERE trace_id = ANY(%s::bytea[])
        GROUP BY trace_id HAVING count(*) > 1
        """,
        [bytea_array(traces)],
    )
    return {bytes(row[0]) for row in cursor.fetchall()}


def fast_times(cursor: Any) -> None:
    """Parse this cursor's timestamps with psycopg's compiled parser (UTC, like Django's)."""
    cursor.cursor.adapters.register_loader("timestamptz", TIMESTAMPTZ)


def _spans_select(cursor: Any, columns: str, traces: set[bytes], *params: Any) -> list[Any]:
    window = spans_window(cursor, traces)
    cursor.execute(
        f"SELECT {columns} FROM ingest_span WHERE trace_id = {ANY_BYTEA}"  # noqa: S608
        f" {WITHIN if window else ''} ORDER BY start_time",
        [*params, bytea_array(traces), *(window or ())],
    )
    return list(cursor.fetchall())


def _spans_load(cursor: Any, traces: set[bytes]) -> dict[bytes, list[SpanRow]]:
    by_trace: dict[bytes, list[SpanRow]] = defaultdict(list)
    if not traces:
        return by_trace
    for row in _spans_select(cursor, ", ".join(SPAN_COLUMNS), traces):
        values = dict(zip(SPAN_COLUMNS, row, strict=True))
        for key in _SPAN_IDS:
            values[key] = bytes(values[key]) if values[key] is not None else None
        for key in _SPAN_JSON:
            values[key] = json_value(values[key])
        span = SpanRow(**values)
        by_trace[span.trace_id].append(span)
    return by_trace


def _status_spans_load(
    cursor: Any, traces: set[bytes], step_spans: Collection[str]
) -> dict[bytes, list[SpanRow]]:
    by_trace: dict[bytes, list[SpanRow]] = defaultdict(list)
    if not traces:
        return by_trace
    rows = _spans_select(cursor, _STATUS_SPAN_SELECT, traces, text_array(step_spans))
    for trace, span, parent, name, at, code, error, system, attributes, links, *rest in rows:
        correlation, message, keys = rest
        by_trace[trace].append(SpanRow(
            trace, span, parent, name, at, code, error, system,
            json_value(attributes) if attributes else {}, json_value(links) if links else [],
            correlation, message, json_value(keys) if keys else {},
        ))  # fmt: skip
    return by_trace


def _records_load(
    cursor: Any, flows: dict[str, FlowFacts], messages: set[str], payloads: bool
) -> list[RecordRow]:
    """The flows' own records, and those without a correlation ID that name one of its
    traces or (with no trace either) carry the message ID of one of its spans."""
    traces = {trace for flow in flows.values() for trace in flow.traces}
    # Headers go with the payloads: only the flow page shows them; status and API do not.
    extra = "headers, payload" if payloads else "NULL"
    cursor.execute(
        f"""
        SELECT id, record_id, occurred_at, system, step, event, message_id, correlation_id, trace_id,
               span_id, business_keys, error, counts_expected, counts_processed, content_type,
               {extra}
        FROM ingest_record
        WHERE correlation_id = {ANY_TEXT}
           OR (correlation_id IS NULL AND trace_id = {ANY_BYTEA})
           OR (correlation_id IS NULL AND trace_id IS NULL AND message_id = {ANY_TEXT})
        ORDER BY occurred_at, id
        """,  # noqa: S608 - fixed column names
        [text_array(flows), bytea_array(traces), text_array(messages)],
    )
    rows = []
    for row in cursor.fetchall():
        record = RecordRow(*row)
        record.trace_id = bytes(record.trace_id) if record.trace_id else None
        record.span_id = bytes(record.span_id) if record.span_id else None
        record.business_keys = json_value(record.business_keys)
        record.headers = json_value(record.headers) if record.headers is not None else {}
        record.payload = bytes(record.payload) if record.payload is not None else None
        rows.append(record)
    return rows


def _spans_assign(
    flows: dict[str, FlowFacts],
    spans: dict[bytes, list[SpanRow]],
    shared: set[bytes],
    records: list[RecordRow],
) -> None:
    own: dict[str, list[RecordRow]] = defaultdict(list)
    for record in records:
        if record.correlation_id is not None:
            own[record.correlation_id].append(record)
    for flow in flows.values():
        linked = {
            bytes.fromhex(link["span_id"])
            for trace in flow.traces
            for span in spans.get(trace, [])
            if span.correlation_id in (None, flow.correlation_id)
            for link in span.links
        }
        mine = own.get(flow.correlation_id, [])
        linked |= {record.span_id for record in mine if record.span_id}
        messages = {record.message_id for record in mine if record.message_id}
        for trace in flow.traces:
            whole = spans.get(trace, [])
            part = trace_part(
                whole, flow.correlation_id, shared=trace in shared, linked_span_ids=linked,
                message_ids=messages,
            )  # fmt: skip
            flow.partial_traces |= len(part) < len(whole)
            flow.spans += part
        flow.spans.sort(key=lambda span: span.start_time)


def _records_assign(flows: dict[str, FlowFacts], records: list[RecordRow]) -> None:
    by_trace: dict[bytes, list[FlowFacts]] = defaultdict(list)
    for flow in flows.values():
        for trace in flow.traces:
            by_trace[trace].append(flow)
    by_message: dict[str, list[FlowFacts]] = defaultdict(list)
    for flow in flows.values():
        for message in flow.span_message_ids:
            by_message[message].append(flow)
    for record in records:
        if record.correlation_id is not None:
            flows[record.correlation_id].records.append(record)
        elif record.trace_id is not None:
            for flow in by_trace.get(record.trace_id, []):
                flow.records.append(record)
        elif record.message_id is not None:
            for flow in by_message.get(record.message_id, []):
                flow.records.append(record)


def _dead_letters_assign(cursor: Any, flows: dict[str, FlowFacts]) -> None:
    messages = {message: flow for flow in flows.values() for message in flow.message_ids}
    cursor.execute(
        """
        SELECT id, message_id, correlation_id, system, error, state, attempts, first_failed_at,
               last_failed_at, transport
        FROM ingest_deadletter
        WHERE correlation_id = ANY(%s::text[])
           OR (correlation_id IS NULL AND message_id = ANY(%s::text[]))
        ORDER BY last_failed_at, id
        """,
        [text_array(flows), text_array(messages)],
    )
    letters = {}
    for row in cursor.fetchall():
        letter = DeadLetterRow(*row)
        flow = flows.get(letter.correlation_id or "") or messages.get(letter.message_id)
        if flow is not None:
            flow.dead_letters.append(letter)
            letters[letter.id] = letter
    _replays_assign(cursor, letters)


def _replays_assign(cursor: Any, letters: dict[int, DeadLetterRow]) -> None:
    if not letters:
        return
    cursor.execute(
        """
        SELECT id, dead_letter_id, state, verdict, requested_at, sent_at, finished_at, outcome
        FROM replay_replayattempt WHERE dead_letter_id = ANY(%s) ORDER BY requested_at
        """,
        [list(letters)],
    )
    for row in cursor.fetchall():
        replay = ReplayRow(str(row[0]), *row[1:])
        replay.verdict = json_value(replay.verdict)
        letters[replay.dead_letter_id].replays.append(replay)
