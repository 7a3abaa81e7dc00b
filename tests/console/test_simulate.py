"""`manage.py simulate` plays the seafood company against a live Tideline, over the network
only, and the console shows the world a user would expect: completed, stalled, failed and
partial flows, QMS dead letters, and a stock-sync gone missing after its Friday-night stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from kombu import Connection

from console.access import Role
from console.services import api_token_create
from console.simulator.world import world_plan
from tests import processes
from tests.processes import celery_worker
from tests.tracing.seafood import definitions_load
from tracing.flows.models import FlowInstance
from tracing.flows.services.missing import flows_missing_check
from tracing.ingest.models import AuditRecord, DeadLetter, Span

ROOT = Path(__file__).resolve().parents[2]
SEED, HISTORY, RATE = 7, timedelta(hours=3), 0.3
AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "")
WANTED = {"completed", "stalled", "failed", "partial"}


@pytest.fixture
def worker(transactional_db: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = celery_worker(str(tmp_path / "beat-schedule"))
    yield process
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def support(live_server: Any, make_user: Callable[..., User]) -> httpx.Client:
    secret = api_token_create(user=make_user(Role.SUPPORT, username="sam"), name="script").secret
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {secret}"}, timeout=30
    )


def simulate(url: str, queue: str) -> subprocess.CompletedProcess[str]:
    """The simulator as a user runs it: no token given, so it creates its own."""
    command = [
        sys.executable, "manage.py", "simulate", "--url", url, "--history", "3h", "--duration", "0",
        "--seed", str(SEED), "--rate", str(RATE), "--amqp-queue", queue,
    ]  # fmt: skip
    if AMQP_URL:
        command += ["--amqp-url", AMQP_URL]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def consume_dead_letters(queue: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "consume_dead_letters", "--amqp-url", AMQP_URL,
         "--queue", f"{queue}.dlq", "--idle-exit", "1"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip


def flows_by_status(support: httpx.Client, status: str) -> list[dict[str, Any]]:
    response = support.get("/api/v1/flows", params={"status": status})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def wait_for_statuses(worker: subprocess.Popen[bytes], orders: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the Celery worker exited"
        statuses = set(FlowInstance.objects.values_list("status", flat=True))
        summarized = FlowInstance.objects.filter(definition__name="order-to-invoice").count()
        if statuses >= WANTED and summarized >= orders:
            return
        time.sleep(0.5)
    raise AssertionError(f"only {statuses} after 60 s ({summarized} of {orders} orders)")


@pytest.fixture
def queue() -> Iterator[str]:
    """A QMS queue of this test's own on the shared RabbitMQ, deleted afterwards."""
    name = f"test.qms.{uuid.uuid4().hex[:8]}"
    yield name
    if AMQP_URL:
        with Connection(AMQP_URL) as broker:
            channel = broker.channel()
            for each in (name, f"{name}.dlq"):
                channel.queue_delete(queue=each)


def test_the_simulated_company_shows_every_kind_of_flow_in_the_console(
    live_server: Any, worker: subprocess.Popen[bytes], support: httpx.Client,
    client_as: Callable[[Role | None], Client], queue: str,
) -> None:  # fmt: skip
    definitions_load()
    run = simulate(live_server.url, queue)
    if AMQP_URL:
        consume_dead_letters(queue)
    ended = datetime.fromisoformat(re.search(r"to (\S+), then live", run.stdout)[1])  # type: ignore[index]
    world = world_plan(seed=SEED, now=ended, history=HISTORY, rate_per_minute=RATE)
    wait_for_statuses(worker, len(world.orders))

    assert set(Span.objects.values_list("service_name", flat=True)) == {
        "ERP", "WMS", "MES", "QMS", "TMS", "FIN",
    }  # fmt: skip
    assert set(Span.objects.values_list("sender", flat=True)) == {"simulator"}
    assert set(AuditRecord.objects.values_list("sender", flat=True)) == {"simulator"}

    stalled = flows_by_status(support, "stalled")
    assert any("Stopped at Shipment booked (TMS)" in flow["sentence"] for flow in stalled)
    failed = [flow["sentence"] for flow in flows_by_status(support, "failed")]
    assert any("Stopped at Certificate approved (QMS)" in sentence for sentence in failed)
    assert any("Stopped at Invoice basis sent (FIN)" in sentence for sentence in failed)
    partial = flows_by_status(support, "partial")
    assert any("processed 800 of" in flow["sentence"] for flow in partial)
    assert flows_by_status(support, "completed")
    qms = DeadLetter.objects.filter(system="QMS")
    assert qms.exists()
    assert qms.first().sender == ("rabbitmq" if AMQP_URL else "simulator")  # type: ignore[union-attr]

    flows_missing_check(now=timezone.now())
    dashboard = client_as(Role.SUPPORT).get("/")
    assert dashboard.status_code == 200
    assert "stock-sync: no run since" in dashboard.content.decode()

    # The same seed, the same world: every planned order became one flow, and no other did.
    orders = set(
        FlowInstance.objects.filter(definition__name="order-to-invoice").values_list(
            "correlation_id", flat=True
        )
    )
    assert orders == {order.number for order in world.orders}
    again = world_plan(seed=SEED, now=ended, history=HISTORY, rate_per_minute=RATE)
    assert [(o.number, o.fate, o.created_at) for o in again.orders] == [
        (o.number, o.fate, o.created_at) for o in world.orders
    ]
    assert len(again.stock_runs) == len(world.stock_runs)
