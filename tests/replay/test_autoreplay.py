"""Auto-replay rules: a target that was down answers its health URL again, and its dead letters
go out once each, as a bulk job started by the rule, with the same checks and trail."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone

from console.access import Role
from console.models import JournalEntry
from replay.autoreplay import auto_replay_rule_poll
from replay.models import AutoReplayRule, BulkReplay, Destination, ReplayAttempt
from tests.processes import celery_worker, worker_stop
from tests.replay.conftest import REPLAY_TIMEOUT_SECONDS, Receiver
from tests.replay.world import NOW, dead_letter, replay, wait_until
from tracing.flows.models import Owner
from tracing.ingest.models import DeadLetter

ACTOR = "auto-replay rule wms-back"


def wms_rule(receiver: Receiver, **fields: Any) -> AutoReplayRule:
    """The WMS inbound deduplicates; when its health URL answers, its 503s go out again."""
    destination, _ = Destination.objects.get_or_create(
        address_prefix=receiver.origin, defaults={"deduplicates": True}
    )
    owner, _ = Owner.objects.get_or_create(team="Warehouse")
    rule = AutoReplayRule(**{
        "name": "wms-back", "destination": destination, "health_url": receiver.origin + "health",
        "error_class": "503", "rate_per_second": 20, "owner": owner, **fields,
    })  # fmt: skip
    rule.full_clean()
    rule.save()
    return rule


def died(sender: httpx.Client, receiver: Receiver, **fields: Any) -> DeadLetter:
    return dead_letter(
        sender, receiver.url, **{"system": "WMS", "error": "HTTP 503 from WMS", **fields}
    )


def poll(rule: AutoReplayRule) -> str:
    return auto_replay_rule_poll(rule_id=rule.id, now=timezone.now())


def keys_delivered(receiver: Receiver) -> Counter[str]:
    return Counter(d["headers"]["Idempotency-Key"] for d in receiver.deliveries)


@pytest.fixture
def worker_without_beat(
    transactional_db: Any, tmp_path: Path, receiver: Receiver
) -> Iterator[Callable[[], Any]]:
    """A real worker whose beat does not poll behind the test's back: the test polls."""
    started: list[Any] = []

    def start() -> Any:
        process = celery_worker(
            str(tmp_path / "beat-schedule"), concurrency=2, beat=False,
            env={
                "TIDELINE_REPLAY_TIMEOUT_SECONDS": str(REPLAY_TIMEOUT_SECONDS),
                "TIDELINE_REPLAY_ALLOWED_DESTINATIONS": receiver.origin,
            },
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        worker_stop(process)


def test_a_target_back_up_gets_each_of_its_dead_letters_once_through_beat(
    sender: httpx.Client, receiver: Receiver, worker: Callable[[], Any]
) -> None:
    receiver.behaviour = "unavailable"
    rule = wms_rule(receiver)
    letters = [died(sender, receiver, correlation_id=f"6{n:03d}") for n in range(5)]
    refused = died(sender, receiver, error="HTTP 400 from WMS: unknown article")
    worker()
    wait_until(lambda: AutoReplayRule.objects.get().last_checked_at is not None, 60)
    rule.refresh_from_db()
    assert rule.last_check_healthy is False
    assert rule.last_check.startswith("HTTP 503 Service Unavailable; waiting for the target")
    assert not BulkReplay.objects.exists() and receiver.deliveries == []

    receiver.behaviour = "ok"
    wait_until(lambda: BulkReplay.objects.filter(state="done").exists(), 90)
    job = BulkReplay.objects.get()
    attempts = list(ReplayAttempt.objects.filter(bulk=job))
    assert keys_delivered(receiver) == Counter({a.idempotency_key: 1 for a in attempts})
    assert {a.dead_letter_id for a in attempts} == {letter.id for letter in letters}
    assert set(
        DeadLetter.objects.filter(id__in=[x.id for x in letters]).values_list("state", flat=True)
    ) == {"replayed"}
    refused.refresh_from_db()
    assert refused.state == "new", "another error class is left alone"
    rule.refresh_from_db()
    assert rule.last_job_id == job.id and rule.last_check_healthy is True
    assert job.requested_by is None and job.reason.startswith(f"{ACTOR}: ")

    trail = JournalEntry.objects.filter(actor=ACTOR)
    assert set(trail.values_list("action", flat=True)) == {
        "bulk_replay.create",
        "auto_replay_rule.start",
    }
    assert trail.get(action="auto_replay_rule.start").details["bulk_replay"] == str(job.id)
    for action in ("replay.send", "replay.outcome"):
        journaled = {e.details["attempt"] for e in JournalEntry.objects.filter(action=action)}
        assert journaled == {str(a.id) for a in attempts}, action
    assert JournalEntry.objects.filter(
        action="bulk_replay.done", subject=f"bulk_replay:{job.id}"
    ).exists()


def test_unsafe_ones_are_skipped_and_a_running_job_is_never_doubled(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker_without_beat: Callable[[], Any],
) -> None:
    worker_without_beat()
    rule = wms_rule(receiver, rate_per_second=2)
    receiver.behaviour = "unavailable"
    poisoned = died(sender, receiver, message_id="put-away-1")
    for _ in range(2):
        poisoned.refresh_from_db()
        assert replay(operators[0], poisoned).status_code == 202
        wait_until(
            lambda: not ReplayAttempt.objects.filter(state__in=["queued", "sending"]).exists()
        )
    poisoned.refresh_from_db()
    assert poisoned.state == "poison"
    # The runtime dead-letters it once more: a new death, still poison.
    died(sender, receiver, message_id="put-away-1", last_failed_at=datetime.now(UTC).isoformat())
    stale = died(sender, receiver, message_id="stock-0600", correlation_id=None)
    after_all = died(sender, receiver, message_id="ship-7")
    records = [
        {"record_id": "s1", "occurred_at": (NOW - timedelta(minutes=9)).isoformat(), "system": "WMS",
         "step": "stock.import", "event": "failed", "message_id": "stock-0600", "business_keys": {"warehouse": "W1"}},
        {"record_id": "s2", "occurred_at": (NOW - timedelta(minutes=1)).isoformat(), "system": "WMS",
         "step": "stock.import", "event": "delivered", "message_id": "stock-0615", "business_keys": {"warehouse": "W1"}},
        {"record_id": "d1", "occurred_at": (NOW - timedelta(minutes=1)).isoformat(), "system": "WMS",
         "step": "shipment.receive", "event": "delivered", "message_id": "ship-7"},
    ]  # fmt: skip
    assert sender.post("/ingest/v1/records", json=records).status_code == 200
    good = [died(sender, receiver, correlation_id=f"7{n:03d}") for n in range(4)]

    assert poll(rule) == "waiting for the target"
    assert not BulkReplay.objects.exists()
    receiver.behaviour = "ok"
    assert poll(rule).startswith("started bulk replay")
    assert "is still running" in poll(rule), "a second poll while the job runs starts nothing"
    wait_until(lambda: BulkReplay.objects.get().state == "done", 60)
    assert BulkReplay.objects.count() == 1

    skipped = dict(
        ReplayAttempt.objects.filter(state="skipped").values_list("dead_letter_id", "outcome")
    )
    assert skipped == {poisoned.id: "poison", stale.id: "stale", after_all.id: "already delivered"}
    delivered = ReplayAttempt.objects.filter(state="delivered", bulk__isnull=False)
    assert {a.dead_letter_id for a in delivered} == {letter.id for letter in good}
    poison_key = (
        ReplayAttempt.objects.filter(dead_letter=poisoned)
        .values_list("idempotency_key", flat=True)
        .distinct()
        .get()
    )
    # The receiver saw the two failed replays of the poisoned one (by the operator), nothing
    # of the stale or delivered ones, and each good one once.
    assert keys_delivered(receiver) == Counter(
        {poison_key: 2, **{a.idempotency_key: 1 for a in delivered}}
    )

    assert poll(rule).endswith("nothing to replay"), "each death is taken once"
    late = died(
        sender, receiver, correlation_id="7999", last_failed_at=datetime.now(UTC).isoformat()
    )
    assert poll(rule).startswith("started bulk replay")
    second = BulkReplay.objects.order_by("-created_at").first()
    assert second is not None and second.selection["dead_letter_ids"] == [late.id]


def test_polls_at_the_same_moment_start_one_job(
    sender: httpx.Client, receiver: Receiver, worker_without_beat: Callable[[], Any]
) -> None:
    worker_without_beat()
    rule = wms_rule(receiver)
    for n in range(3):
        died(sender, receiver, correlation_id=f"8{n:03d}")

    def poll_and_hang_up() -> str:
        try:
            return poll(rule)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(lambda _: poll_and_hang_up(), range(6)))
    assert sum(outcome.startswith("started bulk replay") for outcome in outcomes) == 1, outcomes
    assert BulkReplay.objects.count() == 1
    wait_until(lambda: BulkReplay.objects.get().state == "done")
    assert len(receiver.deliveries) == 3


def test_a_rule_on_a_target_that_does_not_deduplicate_is_refused(
    client_as: Callable[[Role | None], Client], receiver: Receiver
) -> None:
    destination = Destination.objects.create(address_prefix=receiver.origin, deduplicates=False)
    owner = Owner.objects.create(team="Warehouse")
    form = {
        "name": "wms-back", "destination": destination.id, "health_url": receiver.origin + "health",
        "error_class": "503", "rate_per_second": "5", "enabled": "on", "owner": owner.id,
    }  # fmt: skip
    refused = client_as(Role.ADMIN).post("/admin/replay/autoreplayrule/add/", form)
    assert refused.status_code == 200
    assert "does not deduplicate by Idempotency-Key" in refused.content.decode()
    assert not AutoReplayRule.objects.exists()
    with pytest.raises(ValidationError, match="auto-replay is only for targets that deduplicate"):
        AutoReplayRule(
            name="wms-back", destination=destination, health_url=receiver.origin + "health",
            error_class="503", owner=owner,
        ).full_clean()  # fmt: skip


def test_an_admin_keeps_rules_and_every_change_is_journaled(
    client_as: Callable[[Role | None], Client], receiver: Receiver
) -> None:
    destination = Destination.objects.create(address_prefix=receiver.origin, deduplicates=True)
    owner = Owner.objects.create(team="Warehouse")
    admin = client_as(Role.ADMIN)
    form = {
        "name": "wms-back", "destination": destination.id, "health_url": receiver.origin + "health",
        "error_class": "503", "rate_per_second": "5", "enabled": "on", "owner": owner.id,
    }  # fmt: skip
    flood = admin.post("/admin/replay/autoreplayrule/add/", {**form, "rate_per_second": "1e19"})
    assert (
        flood.status_code == 200 and "at most 10,000 messages per second" in flood.content.decode()
    )
    created = admin.post("/admin/replay/autoreplayrule/add/", form)
    assert created.status_code == 302, created.content
    assert AutoReplayRule.objects.get().destination == destination
    assert JournalEntry.objects.filter(action="autoreplayrule.create").exists()
    assert "wms-back" in admin.get("/admin/replay/autoreplayrule/").content.decode()
    assert client_as(Role.OPERATOR).get("/admin/replay/autoreplayrule/").status_code == 403
    # The promise the rule stands on cannot be taken back under it.
    untick = admin.post(
        f"/admin/replay/destination/{destination.id}/change/",
        {"address_prefix": receiver.origin, "side_effects": "on"},
    )
    assert untick.status_code == 200 and "wms-back" in untick.content.decode()
    destination.refresh_from_db()
    assert destination.deduplicates is True


@pytest.mark.parametrize(
    ("health_url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "is not on the replay allow-list"),
        ("http://ops:secret@{origin}health", "no user name, password, query or fragment"),
        ("file:///etc/passwd", "is not an http:// or https:// URL"),
    ],
)
def test_a_health_url_off_the_allow_list_is_refused(
    client_as: Callable[[Role | None], Client], receiver: Receiver, health_url: str, says: str
) -> None:
    destination = Destination.objects.create(address_prefix=receiver.origin, deduplicates=True)
    owner = Owner.objects.create(team="Warehouse")
    origin = receiver.origin.removeprefix("http://")
    form = {
        "name": "wms-back", "destination": destination.id, "health_url": health_url.format(origin=origin),
        "error_class": "503", "rate_per_second": "5", "enabled": "on", "owner": owner.id,
    }  # fmt: skip
    refused = client_as(Role.ADMIN).post("/admin/replay/autoreplayrule/add/", form)
    assert refused.status_code == 200 and says in refused.content.decode()
    assert not AutoReplayRule.objects.exists()


def test_a_health_url_that_left_the_allow_list_is_not_called(
    db: Any, settings: Any, receiver: Receiver
) -> None:
    port = receiver.origin.rsplit(":", 1)[1].strip("/")
    elsewhere = f"http://localhost:{port}/"
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [receiver.origin, elsewhere]
    rule = wms_rule(receiver, health_url=elsewhere + "health")
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [receiver.origin]
    assert poll(rule) == "waiting for the target"
    rule.refresh_from_db()
    assert rule.last_check_healthy is False
    assert rule.last_check.startswith(
        f"not called: {elsewhere}health is not on the replay allow-list"
    )
    assert receiver.health_checks == 0
