"""Bulk replays in the console through the test client: the preview of a filter, starting,
watching (the progress partial stops polling with 286), pausing, cancelling and approving;
and the dead-letter filter's age on the page, in the API and in a bulk job."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from console.access import Role
from console.models import JournalEntry
from replay import transports
from replay.bulk import Selection, bulk_replay_create, bulk_replay_step
from replay.models import BulkReplay, Destination, ReplayAttempt
from replay.services import replay_outcome_record
from tests.tracing.seafood import Runtime
from tracing.ingest.models import DeadLetter

NOW = datetime.now(UTC).replace(microsecond=0)
WMS = "http://wms.internal/"
POLL = {"HX-Request": "true", "HX-Target": "bulk-progress"}


@pytest.fixture(autouse=True)
def allowed(settings: Any) -> None:
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [WMS]


@pytest.fixture
def runtime(db: Any) -> Runtime:
    return Runtime.connected()


def failed(runtime: Runtime, ago: timedelta, system: str = "WMS", **fields: Any) -> DeadLetter:
    """A dead letter whose last failure was `ago` before the test began."""
    message_id = f"msg-{uuid.uuid4().hex[:8]}"
    fields = {"url": f"{WMS}stock", "error": f"HTTP 503 from {system}", **fields}
    runtime.dead_letter(system, NOW - ago, correlation=None, message_id=message_id, **fields)
    return DeadLetter.objects.get(message_id=message_id)


@pytest.fixture
def night(runtime: Runtime) -> list[DeadLetter]:
    """WMS answered 503 last night (three, ten hours ago) and once again a minute ago;
    WMS deduplicates by Idempotency-Key."""
    Destination.objects.create(address_prefix=WMS, deduplicates=True)
    return [failed(runtime, timedelta(hours=10)) for _ in range(3)] + [
        failed(runtime, timedelta(minutes=1))
    ]


@pytest.fixture
def olga(make_user: Callable[..., User]) -> Client:
    """A second operator, for four eyes."""
    client = Client()
    client.force_login(make_user(Role.OPERATOR, username="olga"))
    return client


def job_of(actor: User, **selection: Any) -> BulkReplay:
    return bulk_replay_create(
        selection=Selection(**{"system": "WMS", **selection}), rate_per_second=0,
        include_stale=False, reason="WMS is back", actor=actor, now=timezone.now(),
    )  # fmt: skip


def operator_of(client: Client) -> User:
    return User.objects.get(id=client.session["_auth_user_id"])


def deliver_all(job: BulkReplay) -> None:
    """What a worker does, in this process: take the job's dead letters, deliver each one."""
    bulk_replay_step(job_id=str(job.id), now=timezone.now())
    for attempt in ReplayAttempt.objects.filter(bulk=job, state="queued"):
        ReplayAttempt.objects.filter(id=attempt.id).update(state="sending", sent_at=timezone.now())
        replay_outcome_record(
            attempt_id=str(attempt.id),
            outcome=transports.Outcome("delivered", "HTTP 200 from wms.internal: OK", 200),
            now=timezone.now(),
        )


def test_support_watches_a_bulk_replay_but_cannot_start_or_steer_it(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    job = job_of(operator_of(operator))
    support = client_as(Role.SUPPORT)

    listing = support.get("/bulk-replays/").content.decode()
    assert f'href="/bulk-replays/{job.id}"' in listing and "bob" in listing
    page = support.get(f"/bulk-replays/{job.id}")
    assert page.status_code == 200 and "4 of 4" not in page.content.decode()
    assert b">Pause</button>" not in page.content and b">Cancel</button>" not in page.content
    assert b"Replay these in bulk" not in support.get("/dead-letters/").content

    for action in ("pause", "resume", "cancel", "approve", "reject"):
        assert support.post(f"/bulk-replays/{job.id}/{action}").status_code == 403
    assert support.get("/bulk-replays/new", {"system": "WMS"}).status_code == 403
    assert (
        support.post("/bulk-replays/new", {"system": "WMS", "rate_per_second": 1}).status_code
        == 403
    )
    job.refresh_from_db()
    assert job.state == "running" and BulkReplay.objects.count() == 1

    assert b"Replay these in bulk" in operator.get("/dead-letters/").content
    operator_page = operator.get(f"/bulk-replays/{job.id}").content.decode()
    assert ">Pause</button>" in operator_page and ">Cancel</button>" in operator_page


def test_an_operator_pauses_resumes_and_cancels_and_each_is_journaled(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    job = job_of(operator_of(operator))
    paused = operator.post(f"/bulk-replays/{job.id}/pause")
    assert paused.status_code == 302 and paused["Location"] == f"/bulk-replays/{job.id}"
    page = operator.get(f"/bulk-replays/{job.id}").content.decode()
    assert "Paused: no new messages are taken until you resume." in page
    assert ">Resume</button>" in page and ">Pause</button>" not in page

    again = operator.post(f"/bulk-replays/{job.id}/pause")
    assert again.status_code == 409
    assert "This bulk replay is paused; it cannot pause now." in again.content.decode()

    assert operator.post(f"/bulk-replays/{job.id}/resume").status_code == 302
    job.refresh_from_db()
    assert job.state == "running"
    assert operator.post(f"/bulk-replays/{job.id}/cancel").status_code == 302
    job.refresh_from_db()
    assert job.state == "cancelled" and job.finished_at is not None
    actions = JournalEntry.objects.filter(subject=f"bulk_replay:{job.id}").order_by("id")
    assert [(e.action, e.actor) for e in actions] == [
        ("bulk_replay.create", "bob"), ("bulk_replay.pause", "bob"),
        ("bulk_replay.resume", "bob"), ("bulk_replay.cancel", "bob"),
    ]  # fmt: skip
    assert operator.post(f"/bulk-replays/{uuid.uuid4()}/cancel").status_code == 404


def test_the_progress_polls_every_second_until_the_job_is_done_then_answers_286(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    job = job_of(operator_of(operator))
    page = operator.get(f"/bulk-replays/{job.id}").content.decode()
    assert 'hx-trigger="every 1s"' in page and 'value="0"' in page

    running = operator.get(f"/bulk-replays/{job.id}", headers=POLL)
    assert running.status_code == 200 and b"<html" not in running.content
    assert b'hx-trigger="every 1s"' in running.content

    deliver_all(job)
    bulk_replay_step(job_id=str(job.id), now=timezone.now())  # the driver sees it drained
    job.refresh_from_db()
    assert job.state == "done"
    done = operator.get(f"/bulk-replays/{job.id}", headers=POLL)
    assert done.status_code == 286  # htmx stops polling
    text = done.content.decode()
    assert "hx-trigger" not in text and 'value="100"' in text and "4 of 4 dealt with" in text
    assert '<div class="bulk-sent"><dt>Sent</dt><dd>4</dd>' in text
    assert 'hx-trigger="every' not in operator.get(f"/bulk-replays/{job.id}").content.decode()


def test_a_cancelled_job_stops_the_polling_too(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    job = job_of(operator_of(operator))
    operator.post(f"/bulk-replays/{job.id}/cancel")
    stopped = operator.get(f"/bulk-replays/{job.id}", headers=POLL)
    assert stopped.status_code == 286 and b"cancelled" in stopped.content


def test_the_preview_counts_what_matches_and_what_the_safety_check_would_skip(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter], runtime: Runtime
) -> None:
    failed(runtime, timedelta(hours=9), url="http://elsewhere.example/in")  # not allowed
    failed(runtime, timedelta(hours=9), system="QMS")  # another system
    resolved = failed(runtime, timedelta(hours=9))
    DeadLetter.objects.filter(id=resolved.id).update(state="resolved")
    operator = client_as(Role.OPERATOR)

    preview = operator.get("/bulk-replays/new", {"system": "WMS"})
    assert preview.status_code == 200
    assert preview.context["preview"] == {
        "matched": 5, "checked": 5, "would_skip": {"not allowed": 1}, "needs_approval": False,
    }  # fmt: skip
    text = preview.content.decode()
    assert '<strong class="count" id="bulk-matched">5</strong> dead letters' in text
    assert '<strong class="count">1</strong> not allowed' in text
    assert "Start bulk replay" in text and "needs four eyes" not in text
    assert BulkReplay.objects.count() == 0

    nothing = operator.get("/bulk-replays/new", {"system": "WMS", "error": "certificate"})
    assert nothing.status_code == 200 and nothing.context["preview"]["matched"] == 0
    assert "Start bulk replay" not in nothing.content.decode()
    unknown = operator.get("/bulk-replays/new", {"system": "TMS"})
    assert unknown.status_code == 400 and "cannot start a bulk replay" in unknown.content.decode()


def test_starting_from_the_preview_replays_what_was_previewed(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    preview = operator.get("/bulk-replays/new", {"system": "WMS", "older_than": "1h"})
    assert preview.context["preview"]["matched"] == 3
    form = preview.context["form"]
    posted = {name: form.initial.get(name, "") for name in ("system", "error", "since", "until")}
    started = operator.post(
        "/bulk-replays/new", {**posted, "rate_per_second": "5", "reason": "WMS is back"}
    )
    assert started.status_code == 302
    job = BulkReplay.objects.get()
    assert started["Location"] == f"/bulk-replays/{job.id}"
    assert (job.matched, job.rate_per_second, job.reason, job.state) == (
        3,
        5,
        "WMS is back",
        "running",
    )
    assert job.selection["system"] == "WMS" and job.selection["since"] is None
    until = datetime.fromisoformat(job.selection["until"])
    assert timedelta(minutes=59) < timezone.now() - until < timedelta(minutes=61)
    page = operator.get(started["Location"]).content.decode()
    assert "Bulk replay started." in page and "0 of 3 dealt with" in page


def test_a_bad_start_is_refused_with_its_reason_and_starts_nothing(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    negative = operator.post("/bulk-replays/new", {"system": "WMS", "rate_per_second": "-1"})
    assert negative.status_code == 400 and "Check the start form." in negative.content.decode()
    nothing = operator.post("/bulk-replays/new", {"system": "TMS", "rate_per_second": "1"})
    assert nothing.status_code == 400
    assert "No dead letter waiting for a replay matches this filter." in nothing.content.decode()
    bad_age = operator.get("/bulk-replays/new", {"system": "WMS", "age": "soon"})
    assert bad_age.status_code == 400 and "is not a duration such as" in bad_age.content.decode()
    assert BulkReplay.objects.count() == 0


def test_a_job_needing_approval_says_so_and_another_operator_approves_it_once(
    client_as: Callable[[Role | None], Client], runtime: Runtime, olga: Client
) -> None:
    Destination.objects.create(address_prefix=WMS, deduplicates=False)  # four eyes
    for _ in range(3):
        failed(runtime, timedelta(hours=2))
    bob = client_as(Role.OPERATOR)
    preview = bob.get("/bulk-replays/new", {"system": "WMS"})
    assert preview.context["preview"]["needs_approval"] is True
    assert "One approval covers the whole job." in preview.content.decode()
    form = preview.context["form"].initial
    bob.post("/bulk-replays/new", {"system": form["system"], "rate_per_second": "0"})
    job = BulkReplay.objects.get()
    assert job.state == "pending_approval"

    own = bob.get(f"/bulk-replays/{job.id}").content.decode()
    assert "needs another operator's approval before it sends anything" in own
    assert "You started this job; another operator must approve or reject it." in own
    refused = bob.post(f"/bulk-replays/{job.id}/approve")
    assert refused.status_code == 403
    assert "another operator must approve or reject it" in refused.content.decode()
    assert 'hx-trigger="every 5s"' in olga.get(f"/bulk-replays/{job.id}").content.decode()

    assert (
        olga.post(f"/bulk-replays/{job.id}/approve", {"reason": "WMS is back"}).status_code == 302
    )
    job.refresh_from_db()
    assert job.state == "running" and job.decided_by is not None
    assert job.decided_by.username == "olga"
    bulk_replay_step(job_id=str(job.id), now=timezone.now())
    attempts = ReplayAttempt.objects.filter(bulk=job)
    assert sorted(attempts.values_list("state", flat=True)) == ["queued"] * 3  # one approval, all
    assert olga.post(f"/bulk-replays/{job.id}/approve").status_code == 409


def test_the_list_filters_by_age(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    support = client_as(Role.SUPPORT)
    recent, earlier = night[3].id, {letter.id for letter in night[:3]}

    def listed(**query: str) -> set[int]:
        answer = support.get("/dead-letters/", query)
        assert answer.status_code == 200
        return {letter.id for letter in answer.context["rows"]}

    assert listed(age="1h") == {recent}
    assert listed(age="11h") == {recent, *earlier}
    assert listed(older_than="30m") == earlier
    assert listed(age="12h", older_than="9h") == earlier
    until = (NOW - timedelta(hours=1)).astimezone(timezone.get_current_timezone())
    assert listed(until=until.strftime("%Y-%m-%dT%H:%M")) == earlier

    bad = support.get("/dead-letters/", {"age": "yesterday"})
    assert "is not a duration such as 30m, 1h" in bad.content.decode()
    empty = support.get("/dead-letters/", {"age": "1h", "older_than": "2h"})
    assert "The time window is empty" in empty.content.decode() and not empty.context["rows"]


def test_the_api_filters_by_age_and_refuses_an_age_it_cannot_read(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    support = client_as(Role.SUPPORT)

    def listed(**query: str) -> set[int]:
        answer = support.get("/api/v1/dead-letters", query)
        assert answer.status_code == 200, answer.content
        return {letter["id"] for letter in answer.json()["results"]}

    assert listed(age="1h") == {night[3].id}
    assert listed(older_than="1h", system="WMS") == {letter.id for letter in night[:3]}
    assert listed(age="PT30M") == {night[3].id}
    assert listed(until=(NOW - timedelta(hours=1)).isoformat(), age="1d") == {
        letter.id for letter in night[:3]
    }
    bad = support.get("/api/v1/dead-letters", {"age": "-1h"})
    assert bad.status_code == 400 and "not a duration" in bad.json()["age"][0]
    zero = support.get("/api/v1/dead-letters", {"age": "0m"})
    assert zero.status_code == 400 and "more than 0" in zero.json()["age"][0]
    endless = support.get("/api/v1/dead-letters", {"age": "P1000000000D"})
    assert endless.status_code == 400 and "at most" in endless.json()["age"][0]
    assert support.get("/dead-letters/", {"age": "P1000000000D"}).status_code == 200
    empty = support.get("/api/v1/dead-letters", {"age": "1h", "older_than": "2h"})
    assert empty.status_code == 400 and "leaves no time" in empty.json()["until"][0]


def test_a_bulk_job_through_the_api_takes_only_its_age(
    client_as: Callable[[Role | None], Client], night: list[DeadLetter]
) -> None:
    operator = client_as(Role.OPERATOR)
    api = "/api/v1/bulk-replays"
    preview = operator.post(
        api, {"system": "WMS", "age": "1h", "preview": True}, "application/json"
    )
    assert preview.status_code == 200 and preview.json()["matched"] == 1
    started = operator.post(api, {"system": "WMS", "older_than": "1h"}, "application/json")
    assert started.status_code == 201, started.content
    job = BulkReplay.objects.get(id=started.json()["id"])
    assert job.matched == 3 and job.selection["until"] is not None
    bulk_replay_step(job_id=str(job.id), now=timezone.now())
    taken = set(ReplayAttempt.objects.filter(bulk=job).values_list("dead_letter_id", flat=True))
    assert taken == {letter.id for letter in night[:3]}
    bad = operator.post(api, {"system": "WMS", "age": "a while"}, "application/json")
    assert bad.status_code == 400 and "age" in bad.json()
    flood = operator.post(api, {"system": "WMS", "rate_per_second": 1e19}, "application/json")
    assert flood.status_code == 400 and "rate_per_second" in flood.json()
