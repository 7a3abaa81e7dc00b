"""Bulk replay: a filter, a preview, chunks at a rate, pause and cancel, and a worker killed
mid-job that leaves every message sent at most once."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import psutil
from django.db import connection
from django.utils import timezone

from console.models import JournalEntry
from replay.models import BulkReplay, ReplayAttempt
from replay.sending import (
    LEASE_MARGIN,
    REQUEUED,
    replay_send_group,
    replay_sends_begin,
    replays_claim,
    replays_unstarted_requeue,
)
from replay.services import ReplayOrder, attempt_new, replays_sweep
from tests.replay.conftest import Receiver
from tests.replay.world import dead_letter, deduplicating, job_when_done, replay, wait_until
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


def _sending_children(worker_pid: int, receiver: Receiver) -> list[psutil.Process]:
    """The worker's pool processes connected to the receiver: the ones that may be sending."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    return [
        child
        for child in psutil.Process(worker_pid).children(recursive=True)
        if any(c.raddr and c.raddr.port == port for c in child.net_connections("tcp"))
    ]


def _killed_mid_job_outcome(
    client: httpx.Client, job_id: str, receiver: Receiver, killed_senders: int
) -> None:
    """What a kill mid-job must leave: each message at most once, the job done, the counts
    adding up. In doubt are only messages whose send had begun: those the killed group had
    already sent (their outcomes are recorded with the group's) and at most one per killed
    process that had not reached the target (the one it was sending). Its group's messages
    that had not begun went back to the queue and were sent later."""
    job = job_when_done(client, job_id, seconds=150)
    counts = job["counts"]
    keys = [d["headers"]["Idempotency-Key"] for d in receiver.deliveries]
    assert len(keys) == len(set(keys)), "no message reached the target twice"
    assert counts["taken"] == 40 and counts["failed"] == 0, counts
    assert counts["sent"] + counts["in_doubt"] == 40, counts
    # Every delivered attempt reached the target once; an in-doubt one may or may not have.
    assert counts["sent"] <= len(receiver.deliveries) <= counts["sent"] + counts["in_doubt"]
    received = {d["headers"]["X-Tideline-Replay-Attempt"] for d in receiver.deliveries}
    in_doubt = ReplayAttempt.objects.filter(state="in_doubt")
    never_arrived = {str(a) for a in in_doubt.values_list("id", flat=True)} - received
    assert len(never_arrived) <= killed_senders, (counts, never_arrived)
    assert not in_doubt.filter(sent_at__isnull=True).exists(), "only a begun send is in doubt"


def test_the_sending_child_killed_mid_job_leaves_at_most_its_message_in_doubt(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    first = worker()
    deduplicating(receiver)
    receiver.behaviour = "slow"  # a group of sends takes seconds: the kill lands inside one
    night_of_503s(sender, receiver, 40)
    job_id = start(operators[0], rate_per_second=8).json()["id"]
    receiver.wait_for(6)
    sending = _sending_children(first.pid, receiver)
    assert sending, "a pool process is sending"
    sending[0].send_signal(signal.SIGKILL)
    # The worker forks a new pool process; its beat's sweeper returns what never began.
    _killed_mid_job_outcome(operators[0], job_id, receiver, killed_senders=1)


def test_a_worker_killed_mid_job_sends_nothing_twice_and_the_job_finishes(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    first = worker()
    deduplicating(receiver)
    receiver.behaviour = "slow"
    night_of_503s(sender, receiver, 40)
    job_id = start(operators[0], rate_per_second=8).json()["id"]
    receiver.wait_for(6)
    senders = len(_sending_children(first.pid, receiver))
    for process in [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    before_restart = len(receiver.deliveries)
    worker()
    _killed_mid_job_outcome(operators[0], job_id, receiver, killed_senders=senders)
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


def test_a_long_group_keeps_the_lease_of_what_it_already_sent(
    sender: httpx.Client, receiver: Receiver, settings: Any
) -> None:
    """A group that runs past its first lease renews it for every message it holds: one
    already delivered but not yet recorded is not called in doubt by the sweeper."""
    deduplicating(receiver)
    settings.TIDELINE_REPLAY_TIMEOUT_SECONDS = 2
    receiver.behaviour, receiver.slow_seconds = "slow", 1.0
    attempts = []
    for letter in night_of_503s(sender, receiver, 20):
        attempt = attempt_new(letter, ReplayOrder(letter.id, letter.version), None)
        attempt.save(force_insert=True)
        attempts.append(str(attempt.id))
    claimed_at = timezone.now()

    def send_the_group() -> None:
        try:
            replay_send_group(attempt_ids=attempts, now=claimed_at)
        finally:
            connection.close()

    group = threading.Thread(target=send_the_group)
    group.start()
    wait_until(lambda: len(receiver.deliveries) >= 18, seconds=60)  # renewed after ~15 s

    first_lease_over = claimed_at + timedelta(seconds=3 * 2) + LEASE_MARGIN + timedelta(seconds=1)
    swept = replays_sweep(now=first_lease_over)
    group.join()

    assert swept["in_doubt"] == 0
    assert set(ReplayAttempt.objects.values_list("state", flat=True)) == {"delivered"}
    assert len(receiver.deliveries) == 20


def _claimed_long_ago(sender: httpx.Client, receiver: Receiver, *, begun: bool) -> ReplayAttempt:
    """An attempt a worker claimed and then died holding: its lease ran out long ago; `begun`
    says whether its send had begun."""
    [letter] = night_of_503s(sender, receiver, 1)
    attempt = attempt_new(letter, ReplayOrder(letter.id, letter.version), None)
    attempt.save(force_insert=True)
    DeadLetter.objects.filter(id=letter.id).update(state="replay_requested")
    long_ago = timezone.now() - timedelta(minutes=10)
    ReplayAttempt.objects.filter(id=attempt.id).update(
        state="sending", lease_until=long_ago, sent_at=long_ago if begun else None
    )
    attempt.refresh_from_db()
    return attempt


def test_the_sweeper_returns_a_send_that_never_began_and_calls_a_begun_one_in_doubt(
    sender: httpx.Client, receiver: Receiver, worker: Callable[[], Any]
) -> None:
    deduplicating(receiver)
    never = _claimed_long_ago(sender, receiver, begun=False)
    begun = _claimed_long_ago(sender, receiver, begun=True)

    assert replays_sweep(now=timezone.now()) == {"in_doubt": 1, "woken": 0, "requeued": 1}
    worker()  # the send task the sweeper queued for the one that never began

    wait_until(lambda: ReplayAttempt.objects.get(id=never.id).state == "delivered")
    time.sleep(2)
    assert [d["headers"]["X-Tideline-Replay-Attempt"] for d in receiver.deliveries] == [
        str(never.id)
    ], "the one that never began is sent once; the begun one is never resent"
    assert DeadLetter.objects.get(id=never.dead_letter_id).state == "replayed"
    begun_now = ReplayAttempt.objects.get(id=begun.id)
    assert begun_now.state == "in_doubt" and begun_now.sent_at == begun.sent_at
    assert DeadLetter.objects.get(id=begun.dead_letter_id).state == "in_doubt"
    requeue = JournalEntry.objects.get(action="replay.requeue")
    assert requeue.subject == f"dead_letter:{never.dead_letter_id}"
    assert requeue.details == {"attempt": str(never.id), "reason": REQUEUED}


def test_a_run_whose_claim_was_returned_to_the_queue_no_longer_begins_its_send(
    sender: httpx.Client, receiver: Receiver
) -> None:
    """A worker stalled past its lease, not dead: once the sweeper returned its message to the
    queue and another run claimed it, the stalled run's send does not begin; the new one's does."""
    deduplicating(receiver)
    attempt = _claimed_long_ago(sender, receiver, begun=False)
    stalled_lease = attempt.lease_until
    assert stalled_lease is not None
    assert replays_unstarted_requeue(now=timezone.now()) == [str(attempt.id)]
    now = timezone.now()
    new_lease = now + timedelta(minutes=1)
    assert replays_claim([str(attempt.id)], new_lease, now) == {str(attempt.id)}
    assert replay_sends_begin([str(attempt.id)], stalled_lease, now) == set()
    assert replay_sends_begin([str(attempt.id)], new_lease, now) == {str(attempt.id)}
    assert replay_sends_begin([str(attempt.id)], new_lease, now) == set(), "a send begins once"


def test_a_send_that_never_began_in_a_job_cancelled_meanwhile_is_cancelled_not_sent(
    sender: httpx.Client, receiver: Receiver
) -> None:
    deduplicating(receiver)
    attempt = _claimed_long_ago(sender, receiver, begun=False)
    job = BulkReplay.objects.create(selection={}, state="cancelled")
    ReplayAttempt.objects.filter(id=attempt.id).update(bulk=job)
    assert replays_unstarted_requeue(now=timezone.now()) == []
    attempt.refresh_from_db()
    assert attempt.state == "cancelled"
    assert DeadLetter.objects.get(id=attempt.dead_letter_id).state == "new"
