"""The history, sent the most wanted first.

A weekend of the company takes Tideline minutes to ingest and summarize. The engine plays
it at once and holds what it made; it is then sent flow by flow: first the flows the README
tour visits (the first orders with their failures, 4711 among the certificates QMS
refused, the partial stock export and the last before stock-sync stopped), then all the
others newest first, so today's part of the dashboard fills first and older days follow.
Every record, span and dead letter keeps its own backdated time; only the order of arrival
is chosen, as a runtime's outbox catching up after an outage chooses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from console.simulator.failures import Letter
from console.simulator.telemetry import CORRELATION
from console.simulator.world import ORDER_ASKED_ABOUT, PARTIAL_STOCK_RUN, World

if TYPE_CHECKING:
    from console.simulator.engine import Engine

# Records or spans one request carries: a few hundred kilobytes, well under ingest's limit.
BATCH = 1000
Key = tuple[int, float]
RECORD, SPAN, LETTER = 0, 1, 2


def arrival_key(world: World) -> Callable[[str | None, float], Key]:
    """(0 for the tour's flows else 1, minus when the flow started): sorts what comes first.

    What carries no flow's correlation ID (FIN's invoice run) goes by its own time `at`."""
    starts = {order.number: order.created_at for order in world.orders}
    starts |= {batch.number: batch.produced_at for batch in world.batches}
    starts |= {run.correlation_id: run.at for run in world.stock_runs}
    seconds = {name: at.timestamp() for name, at in starts.items()}
    wanted = {order.number for order in world.orders[: ORDER_ASKED_ABOUT + 1]}
    wanted |= {order.number for order in world.orders if world.qms_down_at(order.certificate_at)}
    runs = world.stock_runs[PARTIAL_STOCK_RUN : PARTIAL_STOCK_RUN + 1] + world.stock_runs[-1:]
    wanted |= {run.correlation_id for run in runs}

    def key(correlation: str | None, at: float) -> Key:
        name = correlation or ""
        return (0 if name in wanted else 1, -seconds.get(name, at))

    return key


def backfill_send(
    engine: Engine,
    *,
    records: list[dict[str, Any]],
    spans: list[ReadableSpan],
    letters: list[tuple[Letter, str, bool]],
) -> None:
    """Send what the history made, in arrival order, records and spans in batches side by side."""
    key = arrival_key(engine.world)
    items: list[tuple[Key, int, Any]] = [
        (key(record["correlation_id"], 0.0), RECORD, record) for record in records
    ]
    for span in spans:
        correlation = (span.attributes or {}).get(CORRELATION)
        at = (span.start_time or 0) / 1e9
        items.append((key(str(correlation) if correlation else None, at), SPAN, span))
    items.extend((key(letter[0].correlation_id, 0.0), LETTER, letter) for letter in letters)
    items.sort(key=lambda item: item[0])  # stable: a flow's pieces keep the order they were made
    pending_records: list[dict[str, Any]] = []
    pending_spans: list[ReadableSpan] = []
    for _, kind, item in items:
        if kind == RECORD:
            pending_records.append(item)
        elif kind == SPAN:
            pending_spans.append(item)
        else:
            engine.dead_letter_send(*item)
        if len(pending_records) >= BATCH or len(pending_spans) >= BATCH:
            _send(engine, pending_records, pending_spans)
            pending_records, pending_spans = [], []
    _send(engine, pending_records, pending_spans)


def _send(engine: Engine, records: list[dict[str, Any]], spans: list[ReadableSpan]) -> None:
    if records:
        engine.sink.post(records)
    if spans:
        engine.services.export(spans)
    engine.catch_up()
