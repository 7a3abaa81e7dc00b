"""`manage.py bench ingest --profile`: CPU per span and per record, stage by stage, in one process.

Wall-clock throughput means little on a shared machine; CPU time spent does not depend on
who else is running. Each stage is timed with `time.process_time()` in this process, and
PostgreSQL's share with the CPU time of this connection's backend process (read from
/proc, so only when PostgreSQL runs on this machine). The store stages run the real
service functions against the real tables, one committed transaction per request, and
everything stored is removed at the end, as `bench ingest` does.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone

from console.models import IngestToken
from tracing.ingest.bench import RECORDS_PER_REQUEST, SPANS_PER_REQUEST, bench_cleanup, workload
from tracing.ingest.otlp import decode_protobuf, span_batch
from tracing.ingest.otlp_json import decode_json
from tracing.ingest.partitions import RECORD_TABLE, stored_range
from tracing.ingest.records import records_parse
from tracing.ingest.services import records_store, spans_store


@dataclass
class Stages:
    """CPU seconds per stage, summed over the requests of one round."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str, clock: Callable[[], float] = time.process_time) -> Iterator[None]:
        started = clock()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + clock() - started


def backend_clock() -> Callable[[], float] | None:
    """CPU seconds of this connection's PostgreSQL backend so far, or None when it is not local."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        schedstat = Path(f"/proc/{cursor.fetchone()[0]}/schedstat")
    if not schedstat.exists():
        return None
    # The first field is nanoseconds on a CPU (finer than utime/stime's clock ticks).
    return lambda: int(schedstat.read_text().split()[0]) / 1e9


def _spans_round(bodies: list[bytes], encoding: str, token: IngestToken) -> Stages:
    stages, backend = Stages(), backend_clock()
    decode = decode_json if encoding == "json" else decode_protobuf
    for body in bodies:
        with stages.timed("decode"):
            export = decode(body)
        with stages.timed("rows"):
            batch = span_batch(
                export, token=token, received_at=timezone.now(), stored_range=stored_range()
            )
        _store(stages, backend, partial(spans_store, batch=batch))
    return stages


def _records_round(bodies: list[bytes], token: IngestToken) -> Stages:
    stages, backend = Stages(), backend_clock()
    for body in bodies:
        with stages.timed("parse"):
            rows = records_parse(
                body, "application/json", token=token, stored_range=stored_range(RECORD_TABLE)
            )
        store = partial(records_store, rows=rows, body=body, content_type="application/json")
        _store(stages, backend, partial(store, sender=token.sender, received_at=timezone.now()))
    return stages


def _store(stages: Stages, backend: Callable[[], float] | None, store: Callable[[], Any]) -> None:
    """The store stage: this process's CPU, and apart from it the backend's (when local)."""
    with stages.timed("store (this process)"):
        if backend is None:
            store()
            return
        with stages.timed("store (PostgreSQL)", backend):
            store()


def _report_rounds(
    title: str, rounds: list[Stages], items: int, unit: str, report: Callable[[str], None]
) -> float:
    """Median µs per item of each stage over the rounds; returns the median total."""
    report(f"{title}: CPU µs per {unit}, median of {len(rounds)} rounds (min..max)")
    totals = [sum(stages.seconds.values()) * 1e6 / items for stages in rounds]
    for stage in sorted(rounds[0].seconds, key=lambda stage: "PostgreSQL" in stage):
        per_item = [stages.seconds[stage] * 1e6 / items for stages in rounds]
        report(
            f"  {stage:<22} {statistics.median(per_item):>7.1f}  ({min(per_item):.1f}..{max(per_item):.1f})"
        )
    report(
        f"  {'total':<22} {statistics.median(totals):>7.1f}  ({min(totals):.1f}..{max(totals):.1f})"
    )
    return statistics.median(totals)


def run(*, requests: int, rounds: int, report: Callable[[str], None]) -> dict[str, float]:
    """Each round stores fresh requests (a repeated span would only be a duplicate)."""
    run_id = secrets.token_hex(3)
    loads = [workload(requests=requests, run=f"{run_id}-{number}") for number in range(rounds + 1)]
    sender = f"bench-{run_id}"
    token = IngestToken(sender=sender)
    report(
        f"{requests} requests per round of {SPANS_PER_REQUEST} spans x 8 attributes "
        f"(or {RECORDS_PER_REQUEST} records); the first round warms up and is not counted"
    )
    if backend_clock() is None:
        report("PostgreSQL is not on this machine: its CPU is not measured")
    figures = {}
    try:
        for encoding in ("protobuf", "json"):
            done = [_spans_round(getattr(load, encoding), encoding, token) for load in loads]
            figures[encoding] = _report_rounds(
                f"OTLP {encoding}", done[1:], requests * SPANS_PER_REQUEST, "span", report
            )
        done = [_records_round(load.records, token) for load in loads]
        figures["records"] = _report_rounds(
            "audit records", done[1:], requests * RECORDS_PER_REQUEST, "record", report
        )
    finally:
        bench_cleanup(sender)
    return figures
