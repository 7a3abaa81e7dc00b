"""Bulk replay: a filter, a preview, chunks at a rate, pause and cancel, and a worker killed
mid-job that leaves every message sent at most once."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psutil
from django.db import connection
from django.utils import timezone

from replay.models import BulkReplay, ReplayAttempt
from replay.sending import replay_send_group
from replay.services import ReplayOrder, attempt_new
from tests.replay.conftest import Receiver
from tests.replay.world import dead_letter, deduplicating, replay, wait_until
from tracing.ingest.models import DeadLetter


def night_of_503s(sender: httpx.Client, receiver: Receiver, count: int) -> list[DeadLetter]:
    return [
        dead_letter(
            sender,
            receiver.url,
            system="WMS",
            correlation_id=f"5{n:03d}",
            error="HTTP 503 from WMS",
        )
        for n in range(count)
    ]


def start(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post("/api/v1/bulk-replays", json={"system": "WMS", "error": "503", **fields})


def job_when_done(client: httpx.Client, job_id: str, seconds: float = 90) -> dict[str, Any]:
    wait_until(
        lambda: client.get(f"/api/v1/bulk-replays/{job_id}").json()["state"] == "done", seconds
    )
    return client.get(f"/api/v1/bulk-replays/{job_id}").json()


def test_a_preview_counts_what_matches_and_what_would_be_skipped(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    deduplicating(receiver)
    night_of_503s(sender, receiver, 3)
    dead_letter(sender, receiver.url, system="QMS")
    preview = start(operators[0], preview=True).json()
    assert preview == {"matched": 3, "checked": 3, "would_skip": {}, "needs_approval": False}
    nothing = operators[0].post("/api/v1/bulk-replays", json={"system": "TMS"})
    assert nothing.status_code == 400 and "No dead letter" in nothing.json()["detail"]
    assert not BulkReplay.objects.exists()


def test_a_bulk_job_replays_each_match_once_and_leaves_the_rest(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    letters = night_of_503s(sender, receiver, 30)
    other = dead_letter(sender, receiver.url, system="QMS")
    response = start(operators[0], reason="WMS is back")
    assert response.status_code == 201, response.text
    job = job_when_done(operators[0], response.json()["id"])
    assert job["counts"]["sent"] == 30 and job["counts"]["taken"] == 30
    assert len(receiver.deliveries) == 30
    bodies = {d["headers"]["Idempotency-Key"] for d in receiver.deliveries}
    assert len(bodies) == 30, "each message once"
    assert all(DeadLetter.objects.get(id=letter.id).state == "replayed" for letter in letters)
    other.refresh_from_db()
    assert other.state == "new"


def test_poison_is_skipped_and_counted(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    receiver.behaviour = "unavailable"
    [poisoned] = night_of_503s(sender, receiver, 1)
    for _ in range(2):
        poisoned.refresh_from_db()
        assert replay(operators[0], poisoned).status_code == 202
        wait_until(
            lambda: not ReplayAttempt.objects.filter(state__in=["queued", "sending"]).exists()
        )
    poisoned.refresh_from_db()
    assert poisoned.state == "poison"
    receiver.behaviour = "ok"
    night_of_503s(sender, receiver, 2)
    job = job_when_done(operators[0], start(operators[0]).json()["id"])
    assert (job["counts"]["sent"], job["counts"]["skipped"]) == (2, 1)
    skipped = ReplayAttempt.objects.get(state="skipped")
    assert skipped.dead_letter_id == poisoned.id and skipped.outcome == "poison"


def test_pause_resume_and_cancel(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    night_of_503s(sender, receiver, 12)
    job_id = start(operators[0], rate_per_second=2).json()["id"]
    receiver.wait_for(2)
    paused = operators[0].post(f"/api/v1/bulk-replays/{job_id}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    time.sleep(2.5)
    settled = len(receiver.deliveries)
    time.sleep(2.5)
    assert len(receiver.deliveries) == settled, "a paused job sends nothing new"
    assert operators[0].post(f"/api/v1/bulk-replays/{job_id}/resume").json()["state"] == "running"
    receiver.wait_for(settled + 2)
    cancelled = operators[0].post(f"/api/v1/bulk-replays/{job_id}/cancel").json()
    assert cancelled["state"] == "cancelled"
    time.sleep(3)
    counts = operators[0].get(f"/api/v1/bulk-replays/{job_id}").json()["counts"]
    assert counts["sent"] == len(receiver.deliveries) < 12
    assert counts["waiting"] == 0
    assert DeadLetter.objects.filter(state="new").count() == 12 - counts["sent"]


def test_a_job_needing_approval_waits_for_another_operator(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    night_of_503s(sender, receiver, 2)  # the receiver is not declared: it may not deduplicate
    olga, oskar = operators
    job = start(olga).json()
    assert job["state"] == "pending_approval"
    assert olga.post(f"/api/v1/bulk-replays/{job['id']}/approve").status_code == 403
    time.sleep(1.5)
    assert receiver.deliveries == []
    assert oskar.post(f"/api/v1/bulk-replays/{job['id']}/approve").json()["state"] == "running"
    done = job_when_done(olga, job["id"])
    assert done["counts"]["sent"] == 2, done["counts"]


def test_a_worker_killed_mid_job_sends_nothing_twice_and_the_job_finishes(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    first = worker()
    deduplicating(receiver)
    night_of_503s(sender, receiver, 40)
    job_id = start(operators[0], rate_per_second=8).json()["id"]
    receiver.wait_for(10)
    # Kill a pool child first (the one sending, most likely), then the whole worker.
    family = psutil.Process(first.pid).children(recursive=True)
    if family:
        family[0].send_signal(signal.SIGKILL)
    time.sleep(1)
    for process in [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    before_restart = len(receiver.deliveries)
    worker()
    job = job_when_done(operators[0], job_id, seconds=150)
    counts = job["counts"]
    keys = [d["headers"]["Idempotency-Key"] for d in receiver.deliveries]
    assert len(keys) == len(set(keys)), "no message reached the target twice"
    assert counts["taken"] == 40
    assert counts["sent"] + counts["in_doubt"] + counts["failed"] == 40
    # Every delivered attempt reached the target once; an in-doubt one may or may not have.
    assert counts["sent"] <= len(receiver.deliveries) <= counts["sent"] + counts["in_doubt"]
    assert len(receiver.deliveries) >= before_restart


def test_a_send_group_run_twice_at_once_sends_each_message_once(
    sender: httpx.Client, receiver: Receiver
) -> None:
    """A group is claimed with one conditional update: what one run claimed, the other
    neither claims nor sends, however their statements interleave."""
    deduplicating(receiver)
    attempts = []
    for letter in night_of_503s(sender, receiver, 8):
        attempt = attempt_new(letter, ReplayOrder(letter.id, letter.version), None)
        attempt.save(force_insert=True)
        attempts.append(str(attempt.id))
    runs: list[list[str]] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        try:
            runs.append(replay_send_group(attempt_ids=attempts, now=timezone.now()))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    keys = [d["headers"]["Idempotency-Key"] for d in receiver.deliveries]
    assert len(keys) == len(set(keys)) == 8
    for states in zip(*runs, strict=True):
        assert sorted(states) == ["delivered", "not claimed"]
    assert set(ReplayAttempt.objects.values_list("state", flat=True)) == {"delivered"}
