"""`manage.py bench ledger`: what the ledger costs ingest, and how fast it sequences, verifies,
proves and exports, against the floors of issue 7.

1. The log: at least --entries (1,000,000) sequenced entries, built once and then reused.
   Audit records are generated in SQL straight into the record table, so the ledger's queue
   trigger queues them exactly as it does for ingest, and the real sequencer logs them.
2. Sequencer entries/s: --sequence more records (100,000) queued, then sequenced.
3. `ledger verify --full` over the whole log, and the same per 1,000,000 entries.
4. Inclusion proof p95 at the log's size: GET /api/v1/ledger/proof/inclusion against a live
   gunicorn server, as an auditor with a personal token, at random indexes.
5. Ingest cost: records/s through POST /ingest/v1/records with the queue trigger on and off
   (switched off with ALTER TABLE, which is why this runs only on a bench database), in
   alternating rounds so that the shared machine's load falls on both alike.
6. Export of --export entries (100,000) and verify.py on the bundle, once `ledger export`
   exists.

The log only grows (it is insert-only): each run adds --sequence entries and a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from django.conf import settings
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from console.access import Role
from console.services import api_token_create, ingest_token_create, user_create
from tracing.ingest.bench import bench_cleanup, items_per_second, live_server, records_in
from tracing.ingest.partitions import partitions_ensure_all
from tracing.ledger.note import signing_key_generate
from tracing.ledger.selectors import tree_size
from tracing.ledger.services import ledger_checkpoint, ledger_sequence, ledger_verify
from tracing.ledger.signing import signing_key

Report = Callable[[str], None]
SENDER = "bench-ledger"
RECORDS_PER_STATEMENT = 100_000
RECORDS_PER_REQUEST = 500
TRIGGER = "ingest_record_to_ledger"
FLOORS = {
    "ingest cost": ("<=", 0.15),
    "sequencer entries/s": (">=", 20_000.0),
    "verify s per 1M": ("<", 10.0),
    "inclusion p95 ms": ("<=", 20.0),
    "export s": ("<", 30.0),
    "verify.py s": ("<", 20.0),
}


def database_check(*, yes_wipe: bool) -> None:
    name = str(connection.settings_dict["NAME"])
    if "bench" not in name and not yes_wipe:
        raise CommandError(
            f"bench ledger adds a million entries to {name!r}'s insert-only log and switches "
            "its ingest trigger off and on. Point DATABASE_URL at a database whose name "
            "contains 'bench', or pass --yes-wipe."
        )


def bench_signing_key() -> None:
    """The bench database's checkpoints need one key across runs: TIDELINE_SIGNING_KEY, or
    one made once in TIDELINE_HOME for benches only."""
    if settings.TIDELINE_SIGNING_KEY:
        return
    keyfile = Path(settings.TIDELINE_HOME) / "bench-signing-key"
    if not keyfile.exists():
        keyfile.parent.mkdir(parents=True, exist_ok=True)
        keyfile.touch(mode=0o600)
        keyfile.write_text(signing_key_generate("bench.invalid/tideline/bench").text() + "\n")
    settings.TIDELINE_SIGNING_KEY = os.environ["TIDELINE_SIGNING_KEY"] = keyfile.read_text().strip()


# The log.

RECORDS_SQL = """
INSERT INTO ingest_record (sender, record_id, occurred_at, system, step, event, message_id,
    correlation_id, business_keys, payload_digest, content_type, headers, error, source,
    raw_body_id, raw_position, received_at)
SELECT %(sender)s, %(run)s || '-' || g,
       %(start)s::timestamptz + g::bigint * %(step)s * interval '1 microsecond',
       (ARRAY['ERP','WMS','MES','QMS','TMS','FIN'])[1 + g %% 6], 'stock.reserve',
       CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'delivered' END, 'msg-' || %(run)s || '-' || g,
       (4000000 + g / 6)::text, jsonb_build_object('order', (4000000 + g / 6)::text),
       sha256(convert_to(%(run)s || g, 'UTF8')), 'application/json',
       '{"x-source": "erp"}'::jsonb, CASE WHEN g %% 50 = 0 THEN 'HTTP 503' ELSE '' END, 'http',
       sha256(convert_to(%(run)s || (g / 500), 'UTF8')), g %% 500,
       %(start)s::timestamptz + g::bigint * %(step)s * interval '1 microsecond' + interval '1 second'
FROM generate_series(%(first)s, %(last)s) AS g
"""


def records_queue(count: int, *, now: datetime, after: datetime | None = None) -> None:
    """`count` audit records over the last hour (or, given `after`, from just after it to
    five minutes ago), queued for the ledger by its trigger."""
    partitions_ensure_all(now=now)
    run = f"bl-{secrets.token_hex(4)}"
    start, end = now - timedelta(hours=1, minutes=5), now - timedelta(minutes=5)
    if after is not None:
        start = max(start, after + timedelta(microseconds=1))
    step = max((end - start) // timedelta(microseconds=1) // max(count, 1), 1)  # microseconds
    with connection.cursor() as cursor:
        for first in range(0, count, RECORDS_PER_STATEMENT):
            last = min(first + RECORDS_PER_STATEMENT, count) - 1
            cursor.execute(
                RECORDS_SQL,
                {"sender": SENDER, "run": run, "start": start, "step": step, "first": first,
                 "last": last},
            )  # fmt: skip


def latest_time() -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(at) FROM ledger_entry")
        return cursor.fetchone()[0]


def log_ensure(entries: int, *, report: Report) -> None:
    missing = entries - tree_size()
    if missing <= 0:
        report(f"log: {tree_size():,} entries stored, reused")
        return
    report(f"log: building {missing:,} entries (records generated in SQL, then sequenced)")
    started = time.perf_counter()
    records_queue(missing, now=timezone.now())
    queued = time.perf_counter()
    sequenced = ledger_sequence(now=timezone.now(), batches=sys.maxsize).entries
    ledger_checkpoint(now=timezone.now())
    report(
        f"log: {missing:,} records queued in {queued - started:.1f} s, {sequenced:,} sequenced "
        f"in {time.perf_counter() - queued:.1f} s"
    )


def sequencer_rate(count: int) -> tuple[float, float]:
    """(entries/s, this process's CPU seconds per 100,000 entries): the second says what
    Python needs, apart from PostgreSQL and from the other work on the machine.

    The records fall after every time logged so far, so that a time range can choose them
    alone for the export (entries' times only rise from here on)."""
    records_queue(count, now=timezone.now(), after=latest_time())
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_pendingentry")
    started, cpu = time.perf_counter(), time.process_time()
    sequenced = ledger_sequence(now=timezone.now(), batches=sys.maxsize).entries
    rate = sequenced / (time.perf_counter() - started)
    cpu_per = (time.process_time() - cpu) * 100_000 / max(sequenced, 1)
    ledger_checkpoint(now=timezone.now())
    return rate, cpu_per


def verify_seconds() -> tuple[int, float, float]:
    """(entries verified, seconds, this process's CPU seconds)."""
    started, cpu = time.perf_counter(), time.process_time()
    run = ledger_verify(now=timezone.now(), full=True)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if not run.ok:
        raise CommandError(f"ledger verify failed on the bench log: {run.problem}")
    return run.verified_size, seconds, cpu


# Over HTTP.


def auditor_token() -> str:
    name = f"bench-auditor-{secrets.token_hex(3)}"
    user = user_create(
        username=name, role=Role.AUDITOR, password=secrets.token_urlsafe(16), actor="bench"
    )
    return api_token_create(user=user, name="bench ledger").secret


def latencies_ms(url: str, *, token: str, paths: list[str], warm_up: int = 20) -> list[float]:
    """Each GET in turn, after a few that warm the workers up; milliseconds, sorted."""
    seconds = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}) as http:
        for number, path in enumerate(paths):
            started = time.perf_counter()
            response = http.get(path)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise CommandError(f"{path}: {response.status_code} {response.text[:200]}")
            if number >= warm_up:
                seconds.append(elapsed * 1000)
    return sorted(seconds)


def inclusion_paths(size: int, requests: int) -> list[str]:
    rng = random.Random(7)  # noqa: S311 - indexes to ask about, not secrets
    return [
        f"/api/v1/ledger/proof/inclusion?index={rng.randrange(size)}&size={size}"
        for _ in range(requests + 20)
    ]


def p50_p95(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.quantiles(values, n=20)[-1]


def _records_body(run: str, number: int) -> bytes:
    occurred = (timezone.now() - timedelta(minutes=5)).isoformat()
    return json.dumps([
        {"record_id": f"{run}-{number}-{n}", "occurred_at": occurred, "system": "WMS",
         "step": "stock.reserve", "event": "delivered", "message_id": f"m-{run}-{number}-{n}",
         "correlation_id": f"{run}-{n % 64}", "business_keys": {"order": str(n)},
         "payload": '{"order": 4711, "lines": 3}', "content_type": "application/json"}
        for n in range(RECORDS_PER_REQUEST)
    ]).encode()  # fmt: skip


def _trigger(enabled: bool) -> None:
    with connection.cursor() as cursor:
        switch = "ENABLE" if enabled else "DISABLE"
        cursor.execute(f"ALTER TABLE ingest_record {switch} TRIGGER {TRIGGER}")


def ingest_cost(url: str, *, rounds: int, requests: int, clients: int) -> tuple[float, float]:
    """(records/s with the ledger's trigger, records/s without), over alternating rounds."""
    sender = f"{SENDER}-ingest-{secrets.token_hex(3)}"
    token = ingest_token_create(sender=sender, systems=[], actor="bench").secret
    run = secrets.token_hex(3)
    bodies = iter(_records_body(run, number) for number in range(rounds * 2 * requests))
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_number in range(rounds * 2):
            ledger_on = round_number % 2 == 0
            _trigger(ledger_on)
            load = [next(bodies) for _ in range(requests)]
            stored = items_per_second(
                f"{url}/ingest/v1/records", load, content_type="application/json",
                token=token, clients=clients, items=records_in,
            )  # fmt: skip
            rates[ledger_on].append(stored)
    finally:
        _trigger(True)
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM ledger_pendingentry p USING ingest_record r "
                "WHERE p.kind = 'record' AND p.source_id = r.id AND r.sender = %s",
                [sender],
            )
        bench_cleanup(sender)
    return statistics.median(rates[True]), statistics.median(rates[False])


# Export, once it exists.


def export_available() -> bool:
    parser = load_command_class("tracing.ledger", "ledger").create_parser("manage.py", "ledger")
    return any(
        "export" in (getattr(action, "choices", None) or {})
        for action in parser._actions  # argparse offers no public way to list subcommands
    )


def export_and_verify(entries: int, *, report: Report) -> tuple[float, float, int] | None:
    """(export seconds, verify.py seconds, entries exported) for the time range of the last
    `entries` entries (the bundle holds every entry between the first and the last in it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(index) FROM ledger_entry")
        last = int(cursor.fetchone()[0])
        first = max(0, last + 1 - entries)
        cursor.execute("SELECT min(at), max(at) FROM ledger_entry WHERE index >= %s", [first])
        since, latest = cursor.fetchone()
    until = latest + timedelta(microseconds=1)  # --until is exclusive
    with tempfile.TemporaryDirectory(prefix="tideline-bench-export-") as folder:
        bundle = Path(folder) / "bundle.zip"
        started = time.perf_counter()
        call_command(
            "ledger", "export", "--since", since.isoformat(), "--until", until.isoformat(),
            "--out", str(bundle),
        )  # fmt: skip
        exported = time.perf_counter() - started
        verify_py = Path(__file__).resolve().parent / "verify.py"
        started = time.perf_counter()
        checked = subprocess.run(  # noqa: S603 - our own verify.py, isolated (-I)
            [sys.executable, "-I", str(verify_py), str(bundle), "--key", signing_key().fingerprint],
            capture_output=True, text=True, cwd=folder, check=False,
        )  # fmt: skip
        verified = time.perf_counter() - started
    said = (checked.stdout or checked.stderr).strip()
    report(f"   verify.py said: {said[:200]}")
    if checked.returncode != 0:
        return None
    return exported, verified, int(said.removeprefix("OK: ").split(" ", 1)[0])


def export_figures(entries: int, *, report: Report) -> dict[str, float]:
    if not export_available():
        report("export: not measured (ledger export not available)")
        return {}
    try:
        timed = export_and_verify(entries, report=report)
    except (CommandError, SystemExit) as error:  # its options may differ from the issue's
        report(f"export: not measured (ledger export failed: {error})")
        return {}
    if timed is None:
        report("export: verify.py did not accept the bundle")
        return {}
    exported, verified, count = timed
    report(f"export of {count:,} entries: {exported:.1f} s  {_verdict('export s', exported)}; "
           f"verify.py: {verified:.1f} s  {_verdict('verify.py s', verified)}")  # fmt: skip
    return {"export s": exported, "verify.py s": verified}


# The run.


def _verdict(name: str, value: float) -> str:
    relation, floor = FLOORS[name]
    holds = {"<=": value <= floor, ">=": value >= floor, "<": value < floor}[relation]
    return f"{'meets' if holds else 'MISSES'} {relation} {floor:,.2f}"


def run(
    *, entries: int, sequence: int, proofs: int, rounds: int, requests: int, clients: int,
    workers: int, export: int, report: Report,
) -> dict[str, float]:  # fmt: skip
    bench_signing_key()
    load = os.getloadavg()
    report(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    log_ensure(entries, report=report)
    figures: dict[str, float] = {}
    rate, cpu_per = sequencer_rate(sequence)
    figures["sequencer entries/s"] = rate
    report(f"sequencer: {sequence:,} records: {rate:,.0f} entries/s (Python CPU {cpu_per:.1f} s "
           f"per 100k)  {_verdict('sequencer entries/s', rate)}")  # fmt: skip
    size, seconds, cpu = verify_seconds()
    figures["verify s per 1M"] = per_million = seconds * 1_000_000 / size
    report(f"ledger verify --full: {size:,} entries in {seconds:.1f} s = {per_million:.1f} s per 1M "
           f"(Python CPU {cpu * 1_000_000 / size:.1f} s per 1M)  "
           f"{_verdict('verify s per 1M', per_million)}")  # fmt: skip
    with live_server(workers=workers, seconds=300) as url:  # a loaded machine starts slowly
        token, size = auditor_token(), tree_size()
        # The same server's answer to a request that reads nothing: what the machine's load
        # alone costs a request, to read the proof's figure against.
        floor = p50_p95(latencies_ms(url, token=token, paths=["/healthz"] * (proofs + 20)))
        proof = p50_p95(latencies_ms(url, token=token, paths=inclusion_paths(size, proofs)))
        figures["inclusion p95 ms"] = proof[1]
        report(f"inclusion proof over HTTP at {size:,}: p50 {proof[0]:.1f} ms, p95 {proof[1]:.1f} ms "
               f"({proofs} requests; /healthz p50 {floor[0]:.1f} ms, p95 {floor[1]:.1f} ms)  "
               f"{_verdict('inclusion p95 ms', proof[1])}")  # fmt: skip
        on, off = ingest_cost(url, rounds=rounds, requests=requests, clients=clients)
        figures["ingest cost"] = max(0.0, 1 - on / off)
        report(f"ingest records/s: ledger on {on:,.0f}, off {off:,.0f} (medians of {rounds} "
               f"rounds of {requests} x {RECORDS_PER_REQUEST}, {clients} clients, {workers} workers): "
               f"cost {figures['ingest cost']:.1%}  {_verdict('ingest cost', figures['ingest cost'])}")  # fmt: skip
    figures.update(export_figures(export, report=report))
    load = os.getloadavg()
    report(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return figures
