"""`manage.py simulate` plays the seafood company against a live Tideline, over the network
only, and the console shows the world a user would expect: completed, stalled, failed and
partial flows, QMS dead letters, and a stock-sync gone missing after its Friday-night stop —
each with the sentence the README tour quotes. With `--targets` running, a replay from the
console really delivers, once, and the flow moves on."""

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
from console.models import IngestToken
from console.services import api_token_create
from console.simulator.world import world_plan
from replay.models import Destination
from tests import processes
from tests.processes import celery_worker, worker_stop
from tests.tracing.seafood import definitions_load
from tracing.flows.models import FlowInstance, Missing
from tracing.flows.services.missing import flows_missing_check
from tracing.ingest.models import AuditRecord, DeadLetter, Span

ROOT = Path(__file__).resolve().parents[2]
# What the issue names: `simulate --history 2h --duration 30 --seed 7` (0.5 orders a minute).
SEED, HISTORY, RATE, LIVE_SECONDS = 7, timedelta(hours=2), 0.5, 30
# The eleventh order of every world meets QMS down (4711 in seed 0's, 74711 in seed 7's).
ASKED_ABOUT = "74711"
AMQP_URL = os.environ.get("TIDELINE_TEST_AMQP_URL", "")
# Through RabbitMQ's dead-letter queue the reason is what RabbitMQ knows; through the API, QMS's answer.
QMS_REASON = "rejected by a consumer of" if AMQP_URL else "HTTP 503 from QMS"
WANTED = {"completed", "stalled", "failed", "partial"}


@pytest.fixture
def worker(transactional_db: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = celery_worker(str(tmp_path / "beat-schedule"))
    yield process
    worker_stop(process)


@pytest.fixture
def support(live_server: Any, make_user: Callable[..., User]) -> httpx.Client:
    secret = api_token_create(user=make_user(Role.SUPPORT, username="sam"), name="script").secret
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {secret}"}, timeout=60
    )


def simulate_command(url: str, *more: str) -> list[str]:
    """The simulator as a user runs it: no token given, so it creates its own."""
    return [
        sys.executable, "manage.py", "simulate", "--url", url, "--history", "2h",
        "--seed", str(SEED), *more,
    ]  # fmt: skip


def simulator_environment() -> dict[str, str]:
    environment = {**os.environ, "DATABASE_URL": processes.test_database_url()}
    environment.pop("TIDELINE_AMQP_URL", None)  # RabbitMQ only when a test names it
    return environment


def simulate(url: str, queue: str) -> subprocess.CompletedProcess[str]:
    command = simulate_command(url, "--duration", str(LIVE_SECONDS), "--amqp-queue", queue)
    if AMQP_URL:
        command += ["--amqp-url", AMQP_URL]
    return subprocess.run(
        command, cwd=ROOT, env=simulator_environment(), capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip


def consume_dead_letters(queue: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "consume_dead_letters", "--amqp-url", AMQP_URL,
         "--queue", f"{queue}.dlq", "--idle-exit", "1"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip


def sentences(support: httpx.Client, status: str) -> list[str]:
    response = support.get("/api/v1/flows", params={"status": status, "limit": 200})
    assert response.status_code == 200, response.text
    return [flow["sentence"] for flow in response.json()["results"]]


def wait_for_statuses(worker: subprocess.Popen[bytes], orders: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the Celery worker exited"
        statuses = set(FlowInstance.objects.values_list("status", flat=True))
        summarized = FlowInstance.objects.filter(definition__name="order-to-invoice").count()
        if statuses >= WANTED and summarized >= orders:
            return
        time.sleep(0.5)
    raise AssertionError(f"only {statuses} after 180 s ({summarized} of {orders} orders)")


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

    # The sentences the README tour quotes, as support reads them through the API.
    completed = sentences(support, "completed")
    assert any(s.startswith("Completed at") and "Invoice basis sent (FIN)" in s for s in completed)
    stalled = sentences(support, "stalled")
    assert any(
        s.startswith("Stopped at Production notified (MES): nothing since Stock reserved at")
        for s in stalled
    )
    failed = sentences(support, "failed")
    assert any(
        "Stopped at Certificate approved (QMS): the message to QMS was dead-lettered" in s
        and QMS_REASON in s
        for s in failed
    )
    assert any(
        s.startswith("Stopped at Invoice basis sent (FIN)") and "currency 'kr'" in s for s in failed
    ), failed
    assert any(
        s.startswith("Partial:") and "processed 800 of" in s for s in sentences(support, "partial")
    ), sentences(support, "partial")

    asked_about = support.get(f"/api/v1/flows/{ASKED_ABOUT}").json()
    assert asked_about["status"] == "failed"
    assert asked_about["sentence"].startswith("Stopped at Certificate approved (QMS)")
    assert asked_about["owner"]

    waiting = support.get("/api/v1/dead-letters", params={"system": "QMS", "state": "new"}).json()
    assert waiting["count"] >= 2
    assert all(QMS_REASON in letter["error"] for letter in waiting["results"])
    assert {letter["sender"] for letter in waiting["results"]} == {
        "rabbitmq" if AMQP_URL else "simulator"
    }

    flows_missing_check(now=timezone.now())
    missing = Missing.objects.filter(kind=Missing.Kind.SCHEDULE, cleared_at=None)
    assert [row.definition_name for row in missing] == ["stock-sync"]
    assert re.match(
        r"stock-sync: no run since .+ — expected every 15 min; \d+ runs? missed\.",
        missing[0].sentence,
    )
    dashboard = client_as(Role.SUPPORT).get("/")
    assert dashboard.status_code == 200
    assert "stock-sync: no run since" in dashboard.content.decode()

    # The same seed, the same world: every planned order became one flow; the live half
    # minute only went on numbering them.
    orders = set(
        FlowInstance.objects.filter(definition__name="order-to-invoice").values_list(
            "correlation_id", flat=True
        )
    )
    planned = {order.number for order in world.orders}
    assert planned <= orders
    assert orders - planned <= {
        str(world.first_order + n) for n in range(len(planned), len(orders))
    }
    again = world_plan(seed=SEED, now=ended, history=HISTORY, rate_per_minute=RATE)
    assert [(o.number, o.fate, o.created_at) for o in again.orders] == [
        (o.number, o.fate, o.created_at) for o in world.orders
    ]
    assert len(again.stock_runs) == len(world.stock_runs)


@pytest.fixture
def operator(live_server: Any, make_user: Callable[..., User]) -> httpx.Client:
    secret = api_token_create(user=make_user(Role.OPERATOR, username="olga"), name="script").secret
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {secret}"}, timeout=60
    )


@pytest.fixture
def simulator_with_targets(live_server: Any) -> Iterator[str]:
    """`simulate --targets` running live; its receivers are a declared, deduplicating destination."""
    port = processes.free_port()
    origin = f"http://127.0.0.1:{port}/"
    Destination.objects.create(address_prefix=origin, deduplicates=True, side_effects=False)
    command = simulate_command(
        live_server.url, "--duration", "300", "--targets", "--targets-port", str(port)
    )
    process = subprocess.Popen(
        command, cwd=ROOT, env=simulator_environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield origin
    process.terminate()
    process.wait(timeout=30)


def eventually(what: str, check: Callable[[], Any], seconds: float = 180) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {seconds:.0f} s")


def test_an_operator_replays_a_qms_dead_letter_to_the_simulated_target_and_the_flow_moves_on(
    worker: subprocess.Popen[bytes], simulator_with_targets: str, operator: httpx.Client,
) -> None:  # fmt: skip
    definitions_load()

    def dead_certificate() -> dict[str, Any] | None:
        answer = operator.get("/api/v1/dead-letters", params={"system": "QMS", "limit": 200})
        letters = [d for d in answer.json()["results"] if d["correlation_id"] == ASKED_ABOUT]
        flow = operator.get(f"/api/v1/flows/{ASKED_ABOUT}")
        failed = flow.status_code == 200 and flow.json()["status"] == "failed"
        return letters[0] if letters and failed else None

    letter = eventually(f"order {ASKED_ABOUT} failed at QMS", dead_certificate)
    assert letter["destination"]["url"] == f"{simulator_with_targets}qms/certificates"

    # QMS is back: the operator replays; a second click while it is queued sends nothing more.
    ask = {"version": letter["version"], "reason": "QMS is back"}
    replay = operator.post(f"/api/v1/dead-letters/{letter['id']}/replay", json=ask)
    assert replay.status_code == 202, replay.text
    again = operator.post(f"/api/v1/dead-letters/{letter['id']}/replay", json=ask)
    assert again.status_code == 409

    attempt = eventually(
        "the replay delivered",
        lambda: (
            (a := operator.get(f"/api/v1/replays/{replay.json()['id']}").json())["state"]
            == "delivered"
            and a
        ),
    )
    assert attempt["outcome_status"] == 200

    # The target took it once: a retry with the same Idempotency-Key is not processed again.
    retry = httpx.post(
        f"{simulator_with_targets}qms/certificates",
        content=b"<certificate/>",
        headers={"Idempotency-Key": attempt["idempotency_key"], "X-Correlation-Id": ASKED_ABOUT},
    )
    assert retry.status_code == 200 and "not processed again" in retry.json()["detail"]

    def moved_on() -> dict[str, Any] | None:
        flow = operator.get(f"/api/v1/flows/{ASKED_ABOUT}").json()
        return flow if flow["status"] == "completed" else None

    flow = eventually(f"order {ASKED_ABOUT} completed", moved_on)
    assert flow["sentence"].startswith("Completed at")
    approved = AuditRecord.objects.filter(
        correlation_id=ASKED_ABOUT, system="QMS", step="certificate.approve", event="delivered"
    )
    assert approved.count() == 1
    assert DeadLetter.objects.get(id=letter["id"]).state == DeadLetter.State.REPLAYED


def test_serve_demo_loads_the_example_alert_rules_once(db: Any) -> None:
    from console.simulator.demo import ALERT_RULES, demo_prepare
    from tracing.alerts.models import AlertRule

    first = demo_prepare(port=processes.free_port())
    assert first.seed == 0  # a fresh console plays the world whose order 4711 the tour follows
    rules = {rule.name: rule for rule in AlertRule.objects.all()}
    assert set(rules) == {rule["name"] for rule in ALERT_RULES}
    assert rules["QMS dead letters piling up"].threshold == 3
    assert all(rule.to_owner and rule.is_active for rule in rules.values())
    rules["Orders stalled"].is_active = False
    rules["Orders stalled"].save()

    second = demo_prepare(port=processes.free_port())  # it leaves an admin's changes be
    assert AlertRule.objects.count() == len(ALERT_RULES)
    assert not AlertRule.objects.get(name="Orders stalled").is_active
    # The simulator's token goes to it in its environment, never on its command line, and
    # only the latest start's token still works.
    assert second.token not in " ".join(second.simulator_command("http://127.0.0.1:8000"))
    assert second.environment["TIDELINE_SIMULATOR_TOKEN"] == second.token
    live = IngestToken.objects.filter(sender="simulator", revoked_at__isnull=True)
    assert [token.prefix for token in live] == [second.token[: len(live[0].prefix)]]
