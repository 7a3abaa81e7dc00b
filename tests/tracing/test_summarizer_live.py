"""A real Celery worker and beat keep the flow summary current, with nothing called by hand."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.services import ingest_token_create
from tests.processes import celery_worker, worker_stop
from tests.tracing.seafood import definitions_load, new_span_id, new_trace
from tracing.flows.models import FlowInstance

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def celery(transactional_db: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    worker = celery_worker(str(tmp_path / "beat-schedule"))
    yield worker
    worker_stop(worker)


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
        assert celery.poll() is None, "the worker exited"
        flow = FlowInstance.objects.filter(correlation_id="4801").first()
        if flow is not None:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the worker did not summarize the flow within 60 s")
    assert flow.status == "in_progress"
    assert flow.sentence.startswith("In progress: Order created (ERP) at ")
