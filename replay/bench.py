"""`manage.py bench replay`: 10,000 dead letters replayed in bulk, counted at the receivers.

A real HTTP receiver in this process counts every delivery by Idempotency-Key; AMQP replays
go to a real RabbitMQ queue whose messages are counted afterwards. Two Celery worker
processes (the floor's setting) do the sending, driven by one bulk job with no rate limit.
Runs only on a database whose name says "bench" (or with --yes-wipe): it adds thousands of
dead letters.
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
from django.core.management.base import CommandError
from django.db import connection
from kombu import Connection, Exchange, Queue

from replay.bulk import Selection, bulk_replay_counts, bulk_replay_create
from replay.models import BulkReplay, Destination
from replay.transports import destination_address
from tracing.ingest.models import DeadLetter

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b'{"order": "bench", "lines": [{"sku": "COD-FILLET-200", "qty": 12}]}'


def database_check(*, yes_wipe: bool) -> None:
    name = str(connection.settings_dict["NAME"])
    if "bench" not in name and not yes_wipe:
        raise CommandError(
            f"bench replay adds thousands of dead letters to {name!r}. Point DATABASE_URL at a "
            "database whose name contains 'bench', or pass --yes-wipe."
        )


class Deliveries:
    """What the HTTP receiver got: every arrival, by idempotency key."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        with self.lock:
            self.keys[key] += 1

    @property
    def total(self) -> int:
        return sum(self.keys.values())

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.keys.values() if count > 1)


@contextmanager
def http_receiver() -> Iterator[tuple[str, Deliveries]]:
    deliveries = Deliveries()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            deliveries.add(self.headers.get("Idempotency-Key", ""))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/bench/in", deliveries
    finally:
        server.shutdown()


def dead_letters_make(
    *, system: str, count: int, transport: str, destination: dict[str, Any]
) -> None:
    """Dead letters as ingest stores them, made in bulk (ingest has its own benchmark)."""
    now = datetime.now(UTC)
    letters = [_dead_letter(system, n, transport, destination, now) for n in range(count)]
    DeadLetter.objects.bulk_create(letters, batch_size=2000)


def _dead_letter(
    system: str, n: int, transport: str, destination: dict[str, Any], now: datetime
) -> DeadLetter:
    return DeadLetter(
        sender="bench", message_key=f"{system}-{n}", message_id=f"{system}-{n}", system=system,
        transport=transport, destination=destination, headers={"content-type": "application/json"},
        payload=PAYLOAD, payload_digest=hashlib.sha256(PAYLOAD).digest(), content_type="application/json",
        error="HTTP 503 from bench", attempts=3, first_failed_at=now, last_failed_at=now, history=[],
    )  # fmt: skip


@contextmanager
def celery_workers(processes: int, amqp_url: str) -> Iterator[None]:
    """The floor's setting: one worker with `processes` pool processes, no beat."""
    with tempfile.TemporaryDirectory() as home:
        worker = subprocess.Popen(  # noqa: S603 - our own fixed command
            [
                sys.executable, "-m", "celery", "-A", "console", "worker", "--concurrency", str(processes),
                "--loglevel", "WARNING", "--without-mingle", "--without-gossip", "--hostname", f"bench@{home}",
            ],
            cwd=ROOT, env={**os.environ, "TIDELINE_REPLAY_AMQP_URL": amqp_url}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(3)  # let the pool start before the clock does
            yield
        finally:
            worker.terminate()
            worker.wait(timeout=60)


@dataclass
class BulkRun:
    transport: str
    matched: int
    seconds: float
    counts: dict[str, int]
    arrived: int
    duplicates: int

    @property
    def per_second(self) -> float:
        return self.counts.get("sent", 0) / self.seconds if self.seconds else 0.0


def bulk_run(*, system: str, transport: str, timeout: float = 1800) -> BulkRun:
    job = bulk_replay_create(
        selection=Selection(system=system), rate_per_second=0, include_stale=False,
        reason="bench replay", actor="bench", now=datetime.now(UTC),
    )  # fmt: skip
    if job.state != BulkReplay.State.RUNNING:
        raise CommandError(f"the bench job is {job.state}, not running: {bulk_replay_counts(job)}")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        job.refresh_from_db()
        if job.state == BulkReplay.State.DONE:
            break
        time.sleep(0.25)
    seconds = time.monotonic() - started
    return BulkRun(
        transport, job.matched, seconds, bulk_replay_counts(job), arrived=0, duplicates=0
    )


def amqp_queue(url: str, name: str) -> None:
    with Connection(url) as broker:
        Queue(name, Exchange(""), routing_key=name, durable=True)(broker.default_channel).declare()


def amqp_drain(url: str, name: str) -> Counter[str]:
    """Every message in the queue, by idempotency key; the queue is deleted afterwards."""
    keys: Counter[str] = Counter()
    with Connection(url) as broker:
        channel = broker.default_channel
        while True:
            message = channel.basic_get(name, no_ack=True)
            if message is None:
                break
            keys[str((message.headers or {}).get("Idempotency-Key", ""))] += 1
        Queue(name, Exchange(""), routing_key=name)(channel).delete()
    return keys


def bench_replay(
    *, http_count: int, amqp_count: int, processes: int, amqp_url: str, out: Any
) -> list[BulkRun]:
    run = secrets.token_hex(3)
    runs: list[BulkRun] = []
    with http_receiver() as (url, deliveries), celery_workers(processes, amqp_url):
        Destination.objects.get_or_create(address_prefix=url, defaults={"deduplicates": True})
        system = f"BENCH-HTTP-{run}"
        dead_letters_make(
            system=system, count=http_count, transport="http", destination={"url": url}
        )
        out.write(
            f"replaying {http_count:,} HTTP dead letters with {processes} worker processes …\n"
        )
        http_run = bulk_run(system=system, transport="http")
        http_run.arrived, http_run.duplicates = deliveries.total, deliveries.duplicates
        runs.append(http_run)
        if amqp_count and amqp_url:
            runs.append(_amqp_bench(run, amqp_count, amqp_url, out))
    return runs


def _amqp_bench(run: str, count: int, amqp_url: str, out: Any) -> BulkRun:
    queue = f"bench.replay.{run}"
    amqp_queue(amqp_url, queue)
    address = destination_address("amqp", {"queue": queue, "exchange": ""}, amqp_url)
    Destination.objects.get_or_create(address_prefix=address, defaults={"deduplicates": True})
    system = f"BENCH-AMQP-{run}"
    dead_letters_make(
        system=system, count=count, transport="amqp", destination={"queue": queue, "exchange": ""}
    )
    out.write(f"replaying {count:,} AMQP dead letters …\n")
    amqp_run = bulk_run(system=system, transport="amqp")
    keys = amqp_drain(amqp_url, queue)
    amqp_run.arrived = sum(keys.values())
    amqp_run.duplicates = sum(n - 1 for n in keys.values() if n > 1)
    return amqp_run


def report(runs: list[BulkRun], processes: int) -> str:
    machine = f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.system()}"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    lines = [
        f"bench replay — {machine}; PostgreSQL {postgres}; {processes} Celery worker processes; no rate limit",
        f"{'transport':<10} {'matched':>8} {'sent':>8} {'failed':>7} {'in doubt':>9} {'arrived':>8} "
        f"{'duplicates':>11} {'seconds':>8} {'replays/s':>10}  floor",
    ]
    for run in runs:
        counts = run.counts
        lines.append(
            f"{run.transport:<10} {run.matched:>8,} {counts.get('sent', 0):>8,} {counts.get('failed', 0):>7,} "
            f"{counts.get('in_doubt', 0):>9,} {run.arrived:>8,} {run.duplicates:>11,} {run.seconds:>8.1f} "
            f"{run.per_second:>10,.0f}  ≥ 200/s, 0 duplicates"
        )
    return "\n".join(lines)
