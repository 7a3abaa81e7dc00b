"""One replay, exactly once: a real Celery worker sends dead letters to a real HTTP receiver."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from django.contrib.auth.models import User
from django.test import Client

from console.access import Role
from console.models import JournalEntry
from console.services import api_token_create
from replay.models import ApprovalRule, Destination, ReplayAttempt
from tests.replay.conftest import Receiver
from tests.replay.world import NOW, dead_letter, deduplicating, replay, wait_until


def test_twenty_concurrent_replays_reach_the_target_once(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    letter = dead_letter(sender, receiver.url)
    answers: list[httpx.Response] = []
    start = threading.Barrier(20)

    def click() -> None:
        start.wait()
        answers.append(replay(operators[0], letter))

    threads = [threading.Thread(target=click) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [202] + [409] * 19
    refused = [answer.json()["detail"] for answer in answers if answer.status_code == 409]
    assert all(
        "already in progress" in text or "changed since you saw it" in text for text in refused
    )
    assert len(receiver.wait_for(1)) == 1
    time.sleep(3)  # a second delivery would come now if it came at all
    assert len(receiver.deliveries) == 1
    delivery = receiver.deliveries[0]
    assert delivery["body"] == b'{"order": "4711", "certificate": "C-1"}'
    assert delivery["headers"]["Idempotency-Key"].startswith("tl-")
    assert delivery["headers"]["x-source"] == "mes"
    letter.refresh_from_db()
    assert letter.state == "replayed"
    assert ReplayAttempt.objects.get().state == "delivered"
    assert (
        JournalEntry.objects.filter(action="replay.outcome", details__state="delivered").count()
        == 1
    )
    # The flow shows the replay and answers "can it be replayed safely?" from its verdict.
    wait_until(lambda: _first_replay_state(operators[0]) == "delivered")
    browser = Client()
    browser.force_login(User.objects.get(username="olga"))
    page = browser.get("/flows/4711").content.decode()
    assert "yes: the target deduplicates by Idempotency-Key" in page
    assert "replay of dead letter" in page


def _first_replay_state(client: httpx.Client) -> str | None:
    flow = client.get("/api/v1/flows/4711")
    replays = flow.json().get("replays", []) if flow.status_code == 200 else []
    return replays[0]["state"] if replays else None


def test_a_hanging_target_leaves_the_replay_in_doubt_never_resent(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    receiver.behaviour = "hang"
    letter = dead_letter(sender, receiver.url)
    first = replay(operators[0], letter)
    assert first.status_code == 202, first.text
    attempt = ReplayAttempt.objects.get()
    wait_until(lambda: ReplayAttempt.objects.get(id=attempt.id).state == "in_doubt")
    time.sleep(3)
    assert len(receiver.deliveries) == 1, "an in-doubt replay is never resent by itself"
    letter.refresh_from_db()
    assert letter.state == "in_doubt"

    # The operator replays it again: the same idempotency key protects a deduplicating target.
    receiver.behaviour = "ok"
    again = replay(operators[0], letter)
    assert again.status_code == 202, again.text
    receiver.wait_for(2)
    keys = {delivery["headers"]["Idempotency-Key"] for delivery in receiver.deliveries}
    assert len(keys) == 1
    attempts = {
        delivery["headers"]["X-Tideline-Replay-Attempt"] for delivery in receiver.deliveries
    }
    assert len(attempts) == 2


def test_the_operator_confirms_an_in_doubt_replay_delivered(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    receiver.behaviour = "hang"
    letter = dead_letter(sender, receiver.url)
    attempt_id = replay(operators[0], letter).json()["id"]
    wait_until(lambda: ReplayAttempt.objects.get(id=attempt_id).state == "in_doubt")
    confirmed = operators[1].post(f"/api/v1/replays/{attempt_id}/confirm-delivered")
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "delivered"
    letter.refresh_from_db()
    assert letter.state == "replayed"
    assert replay(operators[0], letter).status_code == 409  # nothing left to replay


def test_four_eyes_the_requester_cannot_approve_another_operator_can(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver, requires_approval=True)
    olga, oskar = operators
    letter = dead_letter(sender, receiver.url)
    requested = replay(olga, letter, reason="QMS is back")
    assert requested.status_code == 202 and requested.json()["state"] == "pending_approval"
    attempt_id = requested.json()["id"]
    own = olga.post(f"/api/v1/replays/{attempt_id}/approve")
    assert own.status_code == 403 and "another operator" in own.json()["detail"]
    time.sleep(2)
    assert receiver.deliveries == []
    approved = oskar.post(f"/api/v1/replays/{attempt_id}/approve", json={"reason": "checked"})
    assert approved.status_code == 200 and approved.json()["decided_by"] == "oskar"
    assert len(receiver.wait_for(1)) == 1


def test_a_rejected_replay_is_never_sent(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    ApprovalRule.objects.create(scope="system", name="QMS")
    deduplicating(receiver)
    olga, oskar = operators
    letter = dead_letter(sender, receiver.url)
    attempt_id = replay(olga, letter).json()["id"]
    assert (
        oskar.post(f"/api/v1/replays/{attempt_id}/reject").status_code == 400
    )  # a reason is needed
    rejected = oskar.post(
        f"/api/v1/replays/{attempt_id}/reject", json={"reason": "wrong certificate"}
    )
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    time.sleep(2)
    assert receiver.deliveries == []
    letter.refresh_from_db()
    assert letter.state == "new"


def test_a_target_that_does_not_deduplicate_needs_approval(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    letter = dead_letter(sender, receiver.url)
    requested = replay(operators[0], letter)
    assert requested.json()["state"] == "pending_approval"
    assert requested.json()["verdict"]["needs_approval"] == ["the target does not deduplicate"]


def test_a_message_delivered_after_all_is_refused_with_the_evidence(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    deduplicating(receiver)
    letter = dead_letter(sender, receiver.url)
    record = {
        "record_id": "r-late", "occurred_at": NOW.isoformat(), "system": "QMS", "step": "certificate.approve",
        "event": "delivered", "message_id": letter.message_id, "correlation_id": "4711",
    }  # fmt: skip
    assert sender.post("/ingest/v1/records", json=[record]).status_code == 200
    refused = replay(operators[0], letter)
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        "Already delivered: QMS recorded certificate.approve delivered"
    )
    assert "r-late" in refused.json()["detail"]
    assert not ReplayAttempt.objects.exists()


def test_an_older_stock_snapshot_is_refused_as_stale_unless_confirmed(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    deduplicating(receiver)
    letter = dead_letter(
        sender, receiver.url, system="ERP", message_id="stock-0600", correlation_id=None
    )
    records = [
        {"record_id": "s1", "occurred_at": (NOW - timedelta(minutes=9)).isoformat(), "system": "ERP",
         "step": "stock.import", "event": "failed", "message_id": "stock-0600",
         "business_keys": {"warehouse": "W1"}},
        {"record_id": "s2", "occurred_at": (NOW - timedelta(minutes=1)).isoformat(), "system": "ERP",
         "step": "stock.import", "event": "delivered", "message_id": "stock-0615",
         "business_keys": {"warehouse": "W1"}},
    ]  # fmt: skip
    assert sender.post("/ingest/v1/records", json=records).status_code == 200
    refused = replay(operators[0], letter)
    assert refused.status_code == 409
    assert "a newer message for warehouse W1 (stock-0615) reached ERP" in refused.json()["detail"]
    confirmed = replay(
        operators[0], letter, confirm_stale=True, reason="ERP asked for the 06:00 one"
    )
    assert confirmed.status_code == 202
    assert confirmed.json()["verdict"]["stale"]


def test_a_repaired_payload_is_sent_and_the_original_kept(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    letter = dead_letter(sender, receiver.url)
    broken = replay(operators[0], letter, payload='{"order": "4711",')
    assert broken.status_code == 400 and "not well-formed JSON" in broken.json()["detail"]
    repaired = '{"order": "4711", "certificate": "C-2"}'
    response = replay(operators[0], letter, payload=repaired, reason="certificate number fixed")
    assert response.status_code == 202, response.text
    assert '-{"order": "4711", "certificate": "C-1"}' in response.json()["diff"]
    assert '+{"order": "4711", "certificate": "C-2"}' in response.json()["diff"]
    assert receiver.wait_for(1)[0]["body"] == repaired.encode()
    letter.refresh_from_db()
    assert bytes(letter.payload) == b'{"order": "4711", "certificate": "C-1"}'


def test_binary_and_large_payloads_arrive_byte_for_byte(
    sender: httpx.Client,
    operators: list[httpx.Client],
    receiver: Receiver,
    worker: Callable[[], Any],
) -> None:
    worker()
    deduplicating(receiver)
    binary = bytes(range(256)) * 4
    large = (b"0123456789abcdef" * 65536 * 5)[: 5 * 1024 * 1024]
    for payload in (binary, large):
        letter = dead_letter(
            sender, receiver.url, payload=base64.b64encode(payload).decode(), payload_encoding="base64",
            content_type="application/octet-stream", headers={},
        )  # fmt: skip
        assert replay(operators[0], letter).status_code == 202
    deliveries = receiver.wait_for(2, seconds=60)
    assert sorted(d["sha256"] for d in deliveries) == sorted(
        hashlib.sha256(p).hexdigest() for p in (binary, large)
    )


def test_refusals_say_what_was_wrong_and_send_nothing(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver, live_server: Any,
    make_user: Callable[..., User],
) -> None:  # fmt: skip
    deduplicating(receiver)
    olga = operators[0]
    letter = dead_letter(sender, receiver.url)
    stale_version = olga.post(f"/api/v1/dead-letters/{letter.id}/replay", json={"version": 99})
    assert (
        stale_version.status_code == 409
        and stale_version.json()["current"]["version"] == letter.version
    )
    elsewhere = replay(olga, letter, destination={"url": "http://evil.example/steal"})
    assert (
        elsewhere.status_code == 403
        and "not an allowed replay destination" in elsewhere.json()["detail"]
    )
    support = make_user(Role.SUPPORT)
    secret = api_token_create(user=support, name="s").secret
    as_support = httpx.post(
        f"{live_server.url}/api/v1/dead-letters/{letter.id}/replay", json={"version": letter.version},
        headers={"Authorization": f"Token {secret}"},
    )  # fmt: skip
    assert as_support.status_code == 403
    discarded = olga.post(
        f"/api/v1/dead-letters/{letter.id}/discard",
        json={"version": letter.version, "reason": "duplicate order"},
    )
    assert discarded.status_code == 200 and discarded.json()["state"] == "discarded"
    letter.refresh_from_db()
    again = replay(olga, letter)
    assert again.status_code == 409 and "discarded" in again.json()["detail"]
    assert not ReplayAttempt.objects.exists() and receiver.deliveries == []


def test_a_dry_run_shows_the_exact_request_and_sends_nothing(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    deduplicating(receiver)
    letter = dead_letter(sender, receiver.url)
    preview = replay(operators[0], letter, dry_run=True)
    assert preview.status_code == 200
    request = preview.json()["request"]
    assert request["url"] == receiver.url and request["method"] == "POST"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["idempotency-key"].startswith("tl-")
    assert request["body"] == '{"order": "4711", "certificate": "C-1"}'
    assert not ReplayAttempt.objects.exists() and receiver.deliveries == []


def test_an_admin_declares_a_destination_and_it_is_journaled(
    client_as: Callable[[Role | None], Client],
) -> None:
    admin = client_as(Role.ADMIN)
    response = admin.post(
        "/admin/replay/destination/add/",
        {"address_prefix": "http://wms.internal/", "deduplicates": "on", "note": "WMS inbound"},
    )
    assert response.status_code == 302, response.content
    assert Destination.objects.get().deduplicates is True
    assert JournalEntry.objects.filter(action="destination.create").exists()
    assert client_as(Role.OPERATOR).get("/admin/replay/destination/").status_code == 403


def test_an_allow_list_prefix_must_name_a_host_and_end_with_a_slash(
    client_as: Callable[[Role | None], Client],
) -> None:
    from replay.models import prefix_problem

    assert prefix_problem("http://wms.internal/") is None
    assert "must end with '/'" in (prefix_problem("http://wms.internal") or "")
    assert "must start with" in (prefix_problem("ftp://files/") or "")
    refused = client_as(Role.ADMIN).post(
        "/admin/replay/destination/add/", {"address_prefix": "http://wms.internal"}
    )
    assert refused.status_code == 200 and "must end with" in refused.content.decode()
    assert not Destination.objects.exists()


def test_a_bad_allow_list_setting_stops_start_up() -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "TIDELINE_REPLAY_ALLOWED_DESTINATIONS": "http://wms.internal"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "TIDELINE_REPLAY_ALLOWED_DESTINATIONS" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_approval_checks_again_what_happened_while_the_request_waited(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver
) -> None:
    olga, oskar = operators
    letter = dead_letter(sender, receiver.url)  # the receiver is undeclared: approval needed
    attempt_id = replay(olga, letter).json()["id"]
    record = {
        "record_id": "r-meanwhile", "occurred_at": NOW.isoformat(), "system": "QMS",
        "step": "certificate.approve", "event": "delivered", "message_id": letter.message_id,
        "correlation_id": "4711",
    }  # fmt: skip
    assert sender.post("/ingest/v1/records", json=[record]).status_code == 200
    approved = oskar.post(f"/api/v1/replays/{attempt_id}/approve")
    assert approved.status_code == 409
    assert approved.json()["detail"].startswith("Already delivered")
    assert ReplayAttempt.objects.get(id=attempt_id).state == "pending_approval"
    assert receiver.deliveries == []


def test_a_repair_diff_is_shown_only_to_roles_that_see_payloads(
    sender: httpx.Client, operators: list[httpx.Client], receiver: Receiver, live_server: Any,
    make_user: Callable[..., User],
) -> None:  # fmt: skip
    letter = dead_letter(sender, receiver.url)
    repaired = replay(operators[0], letter, payload='{"order": "4711", "certificate": "C-9"}')
    assert repaired.status_code == 202 and "C-9" in repaired.json()["diff"]
    secret = api_token_create(user=make_user(Role.SUPPORT), name="s").secret
    detail = httpx.get(
        f"{live_server.url}/api/v1/dead-letters/{letter.id}",
        headers={"Authorization": f"Token {secret}"},
    ).json()
    assert detail["replays"][0]["diff"] == ""
    assert "C-9" not in json.dumps(detail)
