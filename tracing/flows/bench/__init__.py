"""`manage.py bench flows`: a week of the seafood company at scale, and what people feel of it.

1. The world: orders of order-to-invoice over the last seven days, stored through the ingest
   services (COPY, with the flow-touch marks ingest writes) and summarized by the real
   `flows_summarize`, then VACUUM ANALYZEd. Most orders complete; some stall at each step, some fail
   (half of those with a dead letter), a few go on without their certificate (partial), the
   newest are in progress. An order spans two or three traces: ERP's, the warehouse's (joined by a span
   link: an async hop) and shipping's; each night's invoice export is one trace of many orders.
2. Reads against a live server, as a support user: flow API, flow page, search, dashboard.
3. Summarizer lag: paced ingest through the HTTP endpoints while a Celery worker and beat run;
   lag runs from an ingest request's 200 until its flow's summary shows the new fact.

It empties the span, record, dead-letter and flow tables first (and what refers to them), so
it runs only on a database whose name says "bench" (or with --yes-wipe).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from console.services import ingest_token_create
from tracing.flows.bench.lag import DRAIN_SECONDS, Lag, lag_measure
from tracing.flows.bench.plan import SENDER
from tracing.flows.bench.reads import Figure, reads_measure, reads_plan, support_session
from tracing.flows.bench.workers import celery_running
from tracing.flows.bench.world import (
    World,
    ledger_catch_up,
    world_generate,
    world_summarize,
    world_vacuum,
)
from tracing.ingest.bench import live_server

__all__ = ["World", "database_check", "run", "world_generate", "world_summarize", "world_vacuum"]


def database_check(*, yes_wipe: bool) -> None:
    name = str(connection.settings_dict["NAME"])
    if "bench" not in name and not yes_wipe:
        raise CommandError(
            f"bench flows empties the span, record and flow tables of {name!r}. Point DATABASE_URL "
            "at a database whose name contains 'bench', or pass --yes-wipe."
        )


# The report.


def machine() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} CPUs, {memory:.0f} GB RAM, PostgreSQL {version}"


def figure_line(figure: Figure, unit: str = "ms") -> str:
    scale = 1000 if unit == "ms" else 1
    p50, p95 = figure.percentile(0.5), figure.percentile(0.95)
    shown = [
        f"{value * scale:>8,.{0 if unit == 'ms' else 2}f} {unit}"
        if value is not None
        else f"{'n/a':>11}"
        for value in (p50, p95)
    ]
    verdict = "n/a" if p95 is None else "meets" if p95 * scale <= figure.floor else "MISSES"
    refused = ", ".join(
        f"{count} x {status or 'no answer'}"
        for status, count in sorted(figure.refused.items())
        if count
    )
    return f"  {figure.name:<32}{shown[0]}{shown[1]}   <= {figure.floor:>4,.0f} {unit}  {verdict:<7}{refused}"


def run(
    *, spans: int, records: int, flows: int, requests: int, seconds: float, clients: int, workers: int,
    yes_wipe: bool, reuse_world: bool, report: Callable[[str], None],
) -> None:  # fmt: skip
    database_check(yes_wipe=yes_wipe)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    report(f"bench flows on {machine()}; database {connection.settings_dict['NAME']}")
    if not reuse_world:
        world_report(spans=spans, records=records, flows=flows, report=report)
    caught_up = ledger_catch_up(now=timezone.now())
    if caught_up.entries:
        report(
            f"ledger: {caught_up.entries:,} queued entries sequenced before measuring, "
            f"in {caught_up.seconds:,.0f} s (beat keeps it current as ingest goes)"
        )
    vacuumed = world_vacuum()
    report(
        f"vacuum: the world's tables vacuumed and analyzed in {vacuumed.seconds:,.0f} s; "
        + ("a checkpoint taken" if vacuumed.checkpoint else "no checkpoint (the role may not)")
    )
    api_token, session = support_session()
    plan = reads_plan(size=min(requests, 2000), api_token=api_token, session=session)
    ingest = ingest_token_create(sender=SENDER, systems=[], actor="bench").secret
    with live_server(workers=workers) as url:
        report(
            f"reads: {requests} requests each, {clients} clients, {workers} gunicorn workers (p50, p95)"
        )
        for figure in reads_measure(url, plan, requests=requests, clients=clients):
            report(figure_line(figure))
        with celery_running() as log:
            lag = lag_measure(url, token=ingest, seconds=seconds, span_rate=5000, record_rate=1000)
    lag_report(lag, log, report)


def world_report(*, spans: int, records: int, flows: int, report: Callable[[str], None]) -> None:
    world = world_generate(spans=spans, records=records, flows=flows, now=timezone.now())
    report(
        f"world: {world.spans:,} spans, {world.records:,} records, {world.orders:,} orders, "
        f"{world.dead_letters:,} dead letters, {world.batches} nightly batch traces; "
        f"generated in {world.seconds:,.0f} s ({world.spans / world.seconds:,.0f} spans/s)"
    )
    summarized = world_summarize(now=timezone.now())
    statuses = ", ".join(
        f"{status} {count:,}" for status, count in sorted(summarized.statuses.items())
    )
    report(
        f"summary: {summarized.flows:,} flows summarized in {summarized.seconds:,.0f} s "
        f"({summarized.flows / summarized.seconds:,.0f} flows/s): {statuses}"
    )


def lag_report(lag: Lag, log: Path, report: Callable[[str], None]) -> None:
    ingest, figure = lag.ingest, lag.figure
    report(
        f"ingest alongside, for {ingest.seconds:.0f} s: {ingest.spans / ingest.seconds:,.0f} spans/s "
        f"(target 5,000), {ingest.records / ingest.seconds:,.0f} records/s (target 1,000)"
        + (f"; refused: {dict(ingest.refused)}" if ingest.refused else "")
    )
    worst = max(figure.values, default=0.0)
    report(
        figure_line(figure, unit="s")
        + f"  max {worst:.2f} s over {len(figure.values)} probes"
        + (
            f"; {lag.unseen} not current {DRAIN_SECONDS:.0f} s after ingest stopped"
            if lag.unseen
            else ""
        )
    )
    report(f"  flow-touch marks waiting when ingest stopped: {lag.backlog:,}; Celery log: {log}")
