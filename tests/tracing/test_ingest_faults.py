"""Fault: PostgreSQL becomes unreachable mid-export, and still every span is stored once.

A TCP proxy stands between a gunicorn-served Tideline and PostgreSQL. While the real
OpenTelemetry SDK is exporting, the proxy cuts every connection the moment a batch's COPY,
or its COMMIT, reaches PostgreSQL, stays cut for a few seconds, and is restored. Ingest must
answer 503 with Retry-After, never 500, so the SDK retries; a batch that committed although
Tideline never heard so must not be stored twice when it comes again. A connection dropped
mid-COPY while PostgreSQL stays reachable must be answered the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx
import pytest
from django.db import connection
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from console.services import ingest_token_create
from tests.processes import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
SPANS_PER_ORDER = 5
ORDERS_BEFORE_OUTAGE = 300
ORDERS_DURING_OUTAGE = 300
# The SDK gives up on a batch after 6 attempts (about 10 s of Retry-After: 2); stay well inside.
OUTAGE_SECONDS = 2.5
# PostgreSQL's simple-query message for COMMIT, as psycopg sends it when a transaction ends.
COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"

# Exports one half of the orders, says so, waits for a word on stdin, then exports the other
# half over a second or two, so that more batches queue up behind the one the outage hits.
EXPORTER = textwrap.dedent(
    """
    import sys
    import time
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    before_outage, during_outage = int(sys.argv[1]), int(sys.argv[2])
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("wms")
    steps = ("stock.reserve", "production.notify", "certificate.approve", "shipment.book")

    def orders_export(orders, pause):
        for order in orders:
            with tracer.start_as_current_span("order", attributes={"correlation.id": f"order-{order}"}):
                for step in steps:
                    with tracer.start_as_current_span(step, attributes={"business.order": str(order)}):
                        pass
            time.sleep(pause)

    orders_export(range(before_outage), 0)
    if not provider.force_flush():
        sys.exit("the spans before the outage were not exported")
    print("exported before the outage", flush=True)
    sys.stdin.readline()
    orders_export(range(before_outage, before_outage + during_outage), 0.005)
    provider.shutdown()
    """
)


def _close(sock: socket.socket) -> None:
    # shutdown() first: it wakes a thread blocked in accept() or recv() on this socket.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class DatabaseLink:
    """A TCP proxy on 127.0.0.1 to PostgreSQL that a test can cut and restore.

    `upstream` is (host, port), or the path of PostgreSQL's unix socket (the embedded one
    listens on nothing else).
    """

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._armed: tuple[bytes, Callable[[], None]] | None = None
        self.fault_struck = threading.Event()
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: same port again
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as an unreachable server would."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self.drop()

    def drop(self) -> None:
        """Drop the open connections only, as a restarted server or a reset by a firewall would."""
        with self._lock:
            dropped, self._open = self._open, set()
        for sock in dropped:
            _close(sock)

    def when_sent(self, statement: bytes, fault: Callable[[], None]) -> None:
        """Strike `fault` the moment `statement` has reached PostgreSQL, before it answers."""
        self.fault_struck.clear()
        with self._lock:
            self._armed = (statement, fault)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = self._upstream_connect()
            except OSError:
                return  # cut
            with self._lock:
                if self._listener is not listener:  # cut while connecting upstream
                    _close(client)
                    _close(server)
                    return
                self._open.update((client, server))
            for source, sink, to_postgres in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._relay, args=(source, sink, to_postgres), daemon=True
                ).start()

    def _relay(self, source: socket.socket, sink: socket.socket, to_postgres: bool) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                if to_postgres and self._armed is not None and self._armed[0] in chunk:
                    self._strike()
        except OSError:
            pass
        _close(source)
        _close(sink)

    def _strike(self) -> None:
        with self._lock:
            armed, self._armed = self._armed, None
        if armed is not None:  # else another connection got there first
            armed[1]()
            self.fault_struck.set()

    def _upstream_connect(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.upstream)
            return sock
        sock = socket.create_connection(self.upstream, timeout=5)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def postgres_address(settings_dict: dict[str, Any]) -> tuple[str, int] | str:
    host, port = settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


@dataclass(frozen=True)
class TidelineWeb:
    url: str
    log: Path

    def answered(self, path: str) -> list[int]:
        """The status of every request to `path`, from the request log."""
        statuses = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # gunicorn's own lines are not JSON
            if entry.get("logger") == "tideline.request" and entry.get("path") == path:
                statuses.append(int(entry["status"]))
        return statuses


@pytest.fixture
def database_link(transactional_db: Any) -> Iterator[DatabaseLink]:
    link = DatabaseLink(postgres_address(connection.settings_dict))
    yield link
    link.cut()


@pytest.fixture
def tideline_web(database_link: DatabaseLink, tmp_path: Path) -> Iterator[TidelineWeb]:
    """Tideline's web server, reaching the test database only through the proxy."""
    database = connection.settings_dict
    credentials = quote(database["USER"]) + (
        f":{quote(database['PASSWORD'])}" if database["PASSWORD"] else ""
    )
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://{credentials}@127.0.0.1:{database_link.port}/{quote(database['NAME'])}",
        "REDIS_URL": os.environ["REDIS_URL"],
        "TIDELINE_HOME": os.environ["TIDELINE_HOME"],
    }
    command = [sys.executable, "-m", "gunicorn", "console.wsgi:application"]
    options = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"]
    with log.open("w") as output:
        server = subprocess.Popen(
            command + options, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", server, seconds=60)
        yield TidelineWeb(url=f"http://127.0.0.1:{port}", log=log)
    finally:
        # Stopped before the database is flushed or dropped: its connections would block that.
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def sender(transactional_db: Any) -> str:
    return ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret


def exporter_start(url: str, token: str, stderr: TextIO) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={quote('Bearer ' + token)}",
        "OTEL_SERVICE_NAME": "WMS",
        "OTEL_BSP_MAX_QUEUE_SIZE": "10000",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30",
        # Every 200 ms, not every 5 s: the fault strikes as soon as the second half starts.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    return subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(ORDERS_BEFORE_OUTAGE), str(ORDERS_DURING_OUTAGE)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def exporter_said(exporter: subprocess.Popen[str], seconds: float) -> str:
    assert exporter.stdout is not None
    readable, _, _ = select.select([exporter.stdout], [], [], seconds)
    return exporter.stdout.readline().strip() if readable else ""


@contextlib.contextmanager
def exporter_halfway(web: TidelineWeb, token: str, log: Path) -> Iterator[subprocess.Popen[str]]:
    """The SDK with the first half of the orders exported and stored, waiting to go on."""
    with log.open("w") as stderr:
        exporter = exporter_start(web.url, token, stderr)
    try:
        assert exporter_said(exporter, seconds=60) == "exported before the outage", log.read_text()
        spans = ORDERS_BEFORE_OUTAGE * SPANS_PER_ORDER
        assert spans_stored() == (spans, spans, ORDERS_BEFORE_OUTAGE)
        yield exporter
    finally:
        if exporter.poll() is None:
            exporter.kill()
            exporter.wait()


def exporter_resume(exporter: subprocess.Popen[str]) -> None:
    assert exporter.stdin is not None
    exporter.stdin.write("go on\n")
    exporter.stdin.flush()


def a_span_sent(url: str, token: str) -> httpx.Response:
    nanos = time.time_ns()
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "order.create", "kind": 2, "startTimeUnixNano": str(nanos),
        "endTimeUnixNano": str(nanos + 5_000_000),
        "attributes": [{"key": "correlation.id", "value": {"stringValue": "4711"}}],
    }  # fmt: skip
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    return httpx.post(
        f"{url}/v1/traces",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def spans_stored() -> tuple[int, int, int]:
    """Rows, distinct spans, distinct orders."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)), count(DISTINCT correlation_id)"
            " FROM ingest_span"
        )
        rows, spans, orders = cursor.fetchone()
    return int(rows), int(spans), int(orders)


def rows_settled(seconds: float = 5.0) -> int:
    """Rows once the backend the proxy dropped has finished what it received."""
    rows, deadline = spans_stored()[0], time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        rows, previous = spans_stored()[0], rows
        if rows == previous:
            break
    return rows


def assert_every_span_stored_once(
    exporter: subprocess.Popen[str], exporter_log: Path, web: TidelineWeb, refusals: int
) -> None:
    sdk_said = exporter_log.read_text()
    assert exporter.returncode == 0, sdk_said
    assert "Failed to export" not in sdk_said, sdk_said
    # The SDK was refused and retried: it warns once per refused attempt.
    assert "Transient error Service Unavailable" in sdk_said, sdk_said
    answered = web.answered("/v1/traces")
    assert 500 not in answered and answered.count(503) >= refusals, answered
    orders = ORDERS_BEFORE_OUTAGE + ORDERS_DURING_OUTAGE
    assert spans_stored() == (orders * SPANS_PER_ORDER, orders * SPANS_PER_ORDER, orders)


@pytest.mark.parametrize(
    ("statement", "batch_committed"),
    [(b"COPY ingest_span", False), (COMMIT, True)],
    ids=["cut-as-a-batch-is-copied", "cut-as-a-batch-commits"],
)
def test_postgresql_lost_mid_export_loses_and_duplicates_no_span(
    database_link: DatabaseLink,
    tideline_web: TidelineWeb,
    sender: str,
    tmp_path: Path,
    statement: bytes,
    batch_committed: bool,
) -> None:
    exporter_log = tmp_path / "exporter.log"
    with exporter_halfway(tideline_web, sender, exporter_log) as exporter:
        database_link.when_sent(statement, database_link.cut)
        exporter_resume(exporter)
        assert database_link.fault_struck.wait(30), f"{statement!r} never reached PostgreSQL"
        outage_began = time.monotonic()
        refused = a_span_sent(tideline_web.url, sender)
        rows_in_outage = rows_settled()
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_began)))
        database_link.restore()
        exporter.wait(timeout=120)

    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] in {"1", "2"}
    status = json_format.Parse(refused.text, status_pb2.Status())
    assert status.code == code_pb2.UNAVAILABLE and "retry" in status.message
    # Cut at COPY, the batch's transaction died with its connection; cut at COMMIT, PostgreSQL
    # committed it but Tideline could not know, answered 503, and the SDK sends it again.
    before = ORDERS_BEFORE_OUTAGE * SPANS_PER_ORDER
    assert (rows_in_outage > before) is batch_committed, (rows_in_outage, before)
    # The span sent by hand is not among them: a 503 stores nothing.
    assert_every_span_stored_once(exporter, exporter_log, tideline_web, refusals=2)


def test_a_connection_dropped_mid_copy_is_answered_503_and_the_batch_sent_again(
    database_link: DatabaseLink, tideline_web: TidelineWeb, sender: str, tmp_path: Path
) -> None:
    # PostgreSQL is reachable again at once, so Django reconnects while unwinding the failed
    # transaction and the error that reaches the view is psycopg's own, from its COPY.
    exporter_log = tmp_path / "exporter.log"
    with exporter_halfway(tideline_web, sender, exporter_log) as exporter:
        database_link.when_sent(b"COPY ingest_span", database_link.drop)
        exporter_resume(exporter)
        assert database_link.fault_struck.wait(30), "no COPY reached PostgreSQL"
        exporter.wait(timeout=120)

    assert_every_span_stored_once(exporter, exporter_log, tideline_web, refusals=1)
