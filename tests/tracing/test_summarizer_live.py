"""A real Celery worker and beat keep the flow summary current, with nothing called by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from console.services import ingest_token_create
from tests.tracing.seafood import definitions_load, new_span_id, new_trace
from tracing.flows.models import FlowInstance

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery(transactional_db: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker with beat embedded, on the test database and a broker database of its own."""
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
    }
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "console", "worker", "--beat", "--pool", "solo",
            "--loglevel", "WARNING", "--schedule", str(tmp_path / "beat-schedule"),
        ],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    yield worker
    worker.terminate()
    worker.wait(timeout=30)


def _test_database_url() -> str:
    database = connection.settings_dict
    host = database["HOST"] or ""
    if host.startswith("/"):  # the embedded PostgreSQL listens on a unix socket
        return f"postgresql://{database['USER']}@/{database['NAME']}?host={host}&port={database['PORT']}"
    return f"postgresql://{database['USER']}@{host}:{database['PORT']}/{database['NAME']}"


def order_span(order: str) -> bytes:
    at = datetime.now(UTC) - timedelta(seconds=5)
    nanos = int(at.timestamp()) * 1_000_000_000
    span = {
        "traceId": new_trace(), "spanId": new_span_id(), "name": "order.create", "kind": 1,
        "startTimeUnixNano": str(nanos), "endTimeUnixNano": str(nanos + 40_000_000),
        "attributes": [{"key": "correlation.id", "value": {"stringValue": order}}],
    }  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "ERP"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    ).encode()


def test_a_flow_is_summarized_by_the_worker_soon_after_its_data_arrives(
    live_server: Any, celery: subprocess.Popen[bytes]
) -> None:
    definitions_load()
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    response = httpx.post(
        f"{live_server.url}/v1/traces", content=order_span("4801"),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 200
    sent = time.monotonic()
    deadline = sent + 60  # generous: the worker starts cold; the bench measures the real lag
    while time.monotonic() < deadline:
        assert celery.poll() is None, celery.stderr.read().decode() if celery.stderr else ""
        flow = FlowInstance.objects.filter(correlation_id="4801").first()
        if flow is not None:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the worker did not summarize the flow within 60 s")
    assert flow.status == "in_progress"
    assert flow.sentence.startswith("In progress: Order created (ERP) at ")
