"""`manage.py bench ingest`: what the ingest edge stores per second, against a live server.

Prints, in one run: (a) the floor — in-process protobuf decode of the same requests plus
COPY of their rows into a scratch table with the span table's indexes; (b) end-to-end OTLP
protobuf spans/s; (c) OTLP JSON spans/s; (d) audit records/s; and b/a. Requests carry 512
spans of 8 attributes each. Everything it stores is marked with its own sender and
removed at the end.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from django.db import connection, transaction
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from console.servers import web_server_command
from console.services import ingest_token_create
from tracing.ingest.bulk import copy_rows
from tracing.ingest.otlp import decode_protobuf, span_batch
from tracing.ingest.partitions import stored_range
from tracing.ingest.services import SPAN_COLUMNS, span_copy_row

SPANS_PER_REQUEST = 512
RECORDS_PER_REQUEST = 500
SYSTEMS = ("ERP", "WMS", "MES", "QMS", "TMS", "FIN")
FLOORS = {"protobuf": 25_000.0, "json": 12_000.0, "records": 20_000.0, "ratio": 0.6}


@dataclass(frozen=True)
class Workload:
    sender: str
    protobuf: list[bytes]
    json: list[bytes]
    records: list[bytes]


def workload(*, requests: int, run: str) -> Workload:
    """Distinct spans in every request: a repeated span would be a cheap duplicate, not a store."""
    exports = [_export(run, index) for index in range(requests * 2)]
    return Workload(
        sender=f"bench-{run}",
        protobuf=[export.SerializeToString() for export in exports[:requests]],
        json=[_otlp_json(export) for export in exports[requests:]],
        records=[_records(run, index) for index in range(requests)],
    )


def _export(run: str, index: int) -> ExportTraceServiceRequest:
    export = ExportTraceServiceRequest()
    start = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1e9)
    resource_spans = export.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = SYSTEMS[
        index % len(SYSTEMS)
    ]
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "bench"
    for number in range(SPANS_PER_REQUEST):
        span = scope.spans.add()
        span.trace_id = secrets.token_bytes(16)
        span.span_id = secrets.token_bytes(8)
        span.name = "stock.reserve"
        span.kind = Span.SPAN_KIND_SERVER
        span.start_time_unix_nano = start + number * 1000
        span.end_time_unix_nano = start + number * 1000 + 2_000_000
        order = f"bench-{run}-{index}-{number % 64}"
        for key, value in (("correlation.id", order), ("business.order", order), ("messaging.message.id", f"m-{number}"),
                           ("http.route", "/stock/reserve"), ("net.peer.name", "wms.internal"),
                           ("messaging.system", "rabbitmq")):  # fmt: skip
            span.attributes.add(key=key).value.string_value = value
        span.attributes.add(key="http.status_code").value.int_value = 200
        span.attributes.add(key="retry.count").value.int_value = 0
    return export


def _otlp_json(export: ExportTraceServiceRequest) -> bytes:
    document = json_format.MessageToDict(export)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()  # OTLP JSON IDs are hex
    return json.dumps(document).encode()


def _records(run: str, index: int) -> bytes:
    occurred = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return json.dumps([
        {"record_id": f"bench-{run}-{index}-{number}", "occurred_at": occurred, "system": "WMS",
         "step": "stock.reserve", "event": "delivered", "message_id": f"m-{index}-{number}",
         "correlation_id": f"bench-{run}-{index}-{number % 64}", "business_keys": {"order": str(number)},
         "payload": '{"order": 4711, "lines": 3}', "content_type": "application/json"}
        for number in range(RECORDS_PER_REQUEST)
    ]).encode()  # fmt: skip


def floor_spans_per_second(bodies: list[bytes], *, sender: str) -> float:
    """Decode and COPY in this process, into a scratch table with the span table's indexes."""
    from console.models import IngestToken

    token = IngestToken(sender=sender)
    started = time.perf_counter()
    spans = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_floor (LIKE ingest_span INCLUDING ALL) ON COMMIT DROP"
        )
        for body in bodies:
            batch = span_batch(
                decode_protobuf(body),
                token=token,
                received_at=datetime.now(UTC),
                stored_range=stored_range(),
            )
            # The same row encoding as ingest itself (services.span_copy_row), resource ids aside.
            resource_ids = dict.fromkeys(batch.resources, 0)
            rows = [span_copy_row(row, resource_ids) for row in batch.rows]
            copy_rows(cursor, "bench_floor", SPAN_COLUMNS, rows)
            spans += len(rows)
    return spans / (time.perf_counter() - started)


@contextmanager
def live_server(*, workers: int, seconds: float = 60.0) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="tideline-bench-metrics-")
    server = subprocess.Popen(  # noqa: S603 - our own server
        web_server_command(host="127.0.0.1", port=port, workers=workers),
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/healthz", server, seconds)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_for(url: str, server: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the bench's web server exited at start")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own server
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def items_per_second(
    url: str,
    bodies: list[bytes],
    *,
    content_type: str,
    token: str,
    clients: int,
    items: Callable[[httpx.Response], int],
) -> float:
    """Send every body once from `clients` concurrent connections; items stored per second."""
    pending: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        pending.put(body)
    stored, failures = [0] * clients, []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}

    def client(number: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while True:
                try:
                    body = pending.get_nowait()
                except queue.Empty:
                    return
                response = http.post(url, content=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                stored[number] += items(response)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) failed, first: {failures[0]}")
    return sum(stored) / elapsed


def warm_up(url: str, *, token: str, clients: int, seconds: float = 3.0) -> None:
    """Requests with no span, not counted, until every worker has booted and imported the
    ingest code: /healthz answers as soon as one worker has, and the first stream measured
    would pay for the rest (a third of (b) on a loaded machine)."""
    export = ExportTraceServiceRequest()
    export.resource_spans.add().resource.attributes.add(
        key="service.name"
    ).value.string_value = "ERP"
    body, deadline = export.SerializeToString(), time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-protobuf"}

    def client() -> None:
        with httpx.Client(headers=headers, timeout=60) as http:
            while time.monotonic() < deadline:
                http.post(url, content=body)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def spans_in(response: httpx.Response) -> int:
    return (
        SPANS_PER_REQUEST
        - int(response.json().get("partialSuccess", {}).get("rejectedSpans", 0) or 0)
        if response.headers["Content-Type"] == "application/json"
        else SPANS_PER_REQUEST
    )


def records_in(response: httpx.Response) -> int:
    return int(response.json()["accepted"])


def bench_cleanup(sender: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingest_flowtouch WHERE correlation_id LIKE %s", [f"{sender}-%"])
        cursor.execute(
            "DELETE FROM ingest_flowtouch WHERE trace_id IN (SELECT trace_id FROM ingest_span WHERE sender = %s)",
            [sender],
        )
        for table in ("ingest_span", "ingest_record", "ingest_recordkey", "ingest_rawbody"):
            cursor.execute(f"DELETE FROM {table} WHERE sender = %s", [sender])  # noqa: S608 - fixed names
        cursor.execute("DELETE FROM console_ingesttoken WHERE sender = %s", [sender])


def run(
    *, requests: int, clients: int, workers: int, report: Callable[[str], None]
) -> dict[str, float]:
    load = workload(requests=requests, run=secrets.token_hex(3))
    token = ingest_token_create(sender=load.sender, systems=[], actor="bench").secret
    report(f"{requests} requests per stream, {SPANS_PER_REQUEST} spans x 8 attributes (or {RECORDS_PER_REQUEST} records) each; "
           f"{clients} clients; {workers} gunicorn workers; {os.cpu_count()} CPUs")  # fmt: skip
    try:
        figures = {"floor": floor_spans_per_second(load.protobuf, sender=load.sender)}
        report(f"(a) floor, in-process decode + COPY   {figures['floor']:>10,.0f} spans/s")
        with live_server(workers=workers) as url:
            warm_up(f"{url}/v1/traces", token=token, clients=clients)
            figures["protobuf"] = items_per_second(
                f"{url}/v1/traces", load.protobuf, content_type="application/x-protobuf", token=token, clients=clients,
                items=spans_in,
            )  # fmt: skip
            report(f"(b) OTLP protobuf end to end          {figures['protobuf']:>10,.0f} spans/s")
            figures["json"] = items_per_second(
                f"{url}/v1/traces",
                load.json,
                content_type="application/json",
                token=token,
                clients=clients,
                items=spans_in,
            )
            report(f"(c) OTLP JSON end to end              {figures['json']:>10,.0f} spans/s")
            figures["records"] = items_per_second(
                f"{url}/ingest/v1/records", load.records, content_type="application/json", token=token, clients=clients,
                items=records_in,
            )  # fmt: skip
            report(f"(d) audit records end to end          {figures['records']:>10,.0f} records/s")
        figures["ratio"] = figures["protobuf"] / figures["floor"]
        report(f"b/a                                   {figures['ratio']:>10.2f}")
        for name, floor in FLOORS.items():
            verdict = "meets" if figures[name] >= floor else "BELOW"
            report(f"  {name:<9} {verdict} the floor of {floor:,.2f}")
    finally:
        bench_cleanup(load.sender)
    return figures
