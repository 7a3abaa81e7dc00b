"""The dead-letter console through the test client: what support sees, what an operator does."""

from __future__ import annotations

import json
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
from replay.models import Destination, ReplayAttempt
from replay.services import replay_outcome_record
from tests.tracing.seafood import Runtime, definitions_load
from tracing.flows.services.summary import flows_summarize
from tracing.ingest.models import DeadLetter

NOW = datetime.now(UTC).replace(microsecond=0)
TARGET = "http://qms.internal/"
CERTIFICATE = {
    "order": "4711",
    "certificate": "C-1",
    "customer": {"name": "Kari Nordmann", "email": "kari.nordmann@example.no"},
}


@pytest.fixture(autouse=True)
def allowed(settings: Any) -> None:
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [TARGET]


@pytest.fixture
def runtime(db: Any) -> Runtime:
    return Runtime.connected()


def dead_letter_of(runtime: Runtime, system: str = "QMS", **fields: Any) -> DeadLetter:
    message_id = f"msg-{uuid.uuid4().hex[:8]}"
    fields = {"correlation": "4711", "url": f"{TARGET}in", **fields}
    runtime.dead_letter(system, NOW - timedelta(minutes=5), message_id=message_id, **fields)
    return DeadLetter.objects.get(message_id=message_id)


@pytest.fixture
def letter(runtime: Runtime) -> DeadLetter:
    """QMS refused the certificate of order 4711; its target deduplicates."""
    Destination.objects.create(address_prefix=TARGET, deduplicates=True)
    payload = json.dumps(CERTIFICATE, indent=2)
    return dead_letter_of(runtime, payload=payload, content_type="application/json")


@pytest.fixture
def olga(make_user: Callable[..., User]) -> Client:
    """A second operator, for four eyes."""
    client = Client()
    client.force_login(make_user(Role.OPERATOR, username="olga"))
    return client


def page_of(letter: DeadLetter) -> str:
    return f"/dead-letters/{letter.id}"


def replay(client: Client, letter: DeadLetter, **fields: Any) -> Any:
    return client.post(
        f"{page_of(letter)}/replay", {"version": letter.version, "action": "replay", **fields}
    )


def test_support_sees_the_list_and_a_masked_payload_but_cannot_replay(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    support = client_as(Role.SUPPORT)
    listing = support.get("/dead-letters/")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "HTTP 503 from QMS" in text and 'href="/flows/4711"' in text
    assert f'href="{page_of(letter)}"' in text
    assert "minutes ago" in text

    detail = support.get(page_of(letter)).content.decode()
    assert "kari.nordmann@example.no" not in detail and "•••" in detail
    assert "&quot;certificate&quot;: &quot;C-1&quot;" in detail
    assert "Dry run" not in detail and 'name="payload"' not in detail
    assert "Resolve" not in detail

    assert replay(support, letter).status_code == 403
    closing = {"version": letter.version, "action": "discard", "reason": "not needed"}
    assert support.post(f"{page_of(letter)}/close", closing).status_code == 403
    assert support.post(f"/replays/{uuid.uuid4()}/confirm").status_code == 403
    assert ReplayAttempt.objects.count() == 0
    letter.refresh_from_db()
    assert letter.state == "new"


def test_the_list_filters_counts_by_state_and_pages(
    client_as: Callable[[Role | None], Client], runtime: Runtime
) -> None:
    definitions_load()
    runtime.order("4711", NOW - timedelta(hours=1), until="production.notify")
    runtime.send()
    qms = dead_letter_of(runtime)
    wms = dead_letter_of(runtime, "WMS", error="HTTP 500 from WMS: stock table locked")
    elsewhere = dead_letter_of(runtime, "WMS", correlation="9999", error="HTTP 404 from WMS")
    flows_summarize(now=timezone.now())
    DeadLetter.objects.filter(id=elsewhere.id).update(state="discarded")
    support = client_as(Role.SUPPORT)

    def listed(**query: str) -> set[int]:
        answer = support.get("/dead-letters/", query)
        assert answer.status_code == 200
        return {letter.id for letter in answer.context["rows"]}

    assert listed() == {qms.id, wms.id, elsewhere.id}
    assert listed(system="WMS") == {wms.id, elsewhere.id}
    assert listed(error="stock table") == {wms.id}
    assert listed(state="discarded") == {elsewhere.id}
    assert listed(definition="order-to-invoice") == {qms.id, wms.id}
    assert listed(since=(NOW + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")) == set()
    counts = dict(support.get("/dead-letters/", {"system": "WMS"}).context["counts"])
    assert counts["new"] == 1 and counts["discarded"] == 1 and counts["replayed"] == 0

    fragment = support.get("/dead-letters/", {"system": "QMS"}, headers={"HX-Request": "true"})
    assert b"<html" not in fragment.content and b'id="dead-letter-listing"' in fragment.content


def test_the_list_shows_fifty_a_page(
    client_as: Callable[[Role | None], Client], runtime: Runtime
) -> None:
    for _ in range(51):
        dead_letter_of(runtime)
    support = client_as(Role.SUPPORT)
    first = support.get("/dead-letters/")
    assert len(first.context["rows"]) == 50 and "1\N{EN DASH}50 of 51" in first.content.decode()
    assert len(support.get("/dead-letters/", {"page": 2}).context["rows"]) == 1


def test_an_operator_sees_the_payload_as_sent_journaled_once_an_hour(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    for _ in range(2):
        page = operator.get(page_of(letter)).content.decode()
        assert "kari.nordmann@example.no" in page
    views = JournalEntry.objects.filter(
        action="payload.view_unmasked", subject=f"dead_letter:{letter.id}"
    )
    assert views.count() == 1


def test_a_dry_run_shows_the_exact_request_and_sends_nothing(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    answer = replay(operator, letter, action="dry_run")
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "Dry run: nothing was sent" in page
    assert "http://qms.internal/in" in page and "Idempotency-Key" in page
    assert "&quot;certificate&quot;: &quot;C-1&quot;" in page
    assert "the target deduplicates by Idempotency-Key" in page
    assert ReplayAttempt.objects.count() == 0
    letter.refresh_from_db()
    assert letter.version == 1 and letter.state == "new"


def test_an_operator_replays_and_the_page_follows_until_it_is_delivered(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    answer = replay(operator, letter, payload=bytes(letter.payload).decode())
    assert answer.status_code == 302 and answer["Location"] == page_of(letter)
    attempt = ReplayAttempt.objects.get()
    assert attempt.state == "queued" and not attempt.repaired
    assert attempt.requested_by is not None and attempt.requested_by.username == "bob"
    page = operator.get(page_of(letter)).content.decode()
    assert "Replay requested. It is queued and will be sent once." in page
    assert 'hx-trigger="every 2s"' in page and "Dry run" not in page
    assert "<strong>bob</strong> asked for a replay" in page

    poll = {"HX-Request": "true", "HX-Target": "replays"}
    assert operator.get(page_of(letter), headers=poll).status_code == 200
    ReplayAttempt.objects.filter(id=attempt.id).update(state="sending", sent_at=timezone.now())
    replay_outcome_record(
        attempt_id=str(attempt.id),
        outcome=transports.Outcome("delivered", "HTTP 200 from qms.internal: OK", 200),
        now=timezone.now(),
    )
    done = operator.get(page_of(letter), headers=poll)
    assert done.status_code == 286  # htmx stops polling
    assert "HTTP 200 from qms.internal" in done.content.decode()
    assert "every 2s" not in done.content.decode()


def test_a_replay_on_an_older_version_is_refused_with_409(
    client_as: Callable[[Role | None], Client], runtime: Runtime, letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    seen = letter.version
    # It dies again meanwhile: the runtime reports another death of the same message.
    runtime.dead_letter(
        "QMS", NOW, correlation="4711", message_id=letter.message_id, url=f"{TARGET}in",
        error="HTTP 502 from QMS", payload=bytes(letter.payload).decode(),
        content_type="application/json",
    )  # fmt: skip
    answer = replay(operator, letter, reason="QMS is back")
    assert answer.status_code == 409
    page = answer.content.decode()
    assert "The dead letter changed since you saw it" in page
    assert f'name="version" value="{seen + 1}"' in page  # the form now carries what is shown
    assert 'value="QMS is back"' in page
    assert ReplayAttempt.objects.count() == 0


def test_a_repair_is_checked_sent_as_edited_and_shown_as_a_diff(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    broken = replay(operator, letter, payload='{"order": "4711",')
    assert broken.status_code == 400 and "not well-formed JSON" in broken.content.decode()
    assert ReplayAttempt.objects.count() == 0

    repaired = json.dumps({**CERTIFICATE, "certificate": "C-2"}, indent=2)
    as_browsers_send_it = repaired.replace("\n", "\r\n")
    assert replay(operator, letter, payload=as_browsers_send_it).status_code == 302
    attempt = ReplayAttempt.objects.get()
    assert attempt.repaired and bytes(attempt.payload) == repaired.encode()
    letter.refresh_from_db()
    assert bytes(letter.payload) == json.dumps(CERTIFICATE, indent=2).encode()
    page = operator.get(page_of(letter)).content.decode()
    assert '<span class="diff-removed">-  &quot;certificate&quot;: &quot;C-1&quot;,</span>' in page
    assert '<span class="diff-added">+  &quot;certificate&quot;: &quot;C-2&quot;,</span>' in page


def test_four_eyes_the_requester_cannot_approve_another_operator_can(
    client_as: Callable[[Role | None], Client], olga: Client, letter: DeadLetter
) -> None:
    Destination.objects.filter(address_prefix=TARGET).update(requires_approval=True)
    bob = client_as(Role.OPERATOR)
    assert replay(bob, letter, reason="QMS is back").status_code == 302
    attempt = ReplayAttempt.objects.get()
    assert attempt.state == "pending_approval"
    own = bob.get(page_of(letter)).content.decode()
    assert "waits for another operator&#x27;s approval" in own
    assert ">Approve</button>" not in own
    assert "another operator must approve or reject it" in own
    refused = bob.post(f"/replays/{attempt.id}/decide", {"decision": "approve"})
    assert refused.status_code == 403 and "another operator" in refused.content.decode()

    assert ">Approve</button>" in olga.get(page_of(letter)).content.decode()
    no_reason = olga.post(f"/replays/{attempt.id}/decide", {"decision": "reject"})
    assert no_reason.status_code == 400 and "Say why" in no_reason.content.decode()
    approved = olga.post(f"/replays/{attempt.id}/decide", {"decision": "approve"})
    assert approved.status_code == 302
    attempt.refresh_from_db()
    assert attempt.state == "queued"
    assert attempt.decided_by is not None and attempt.decided_by.username == "olga"


def test_resolving_needs_a_reason(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    close = f"{page_of(letter)}/close"
    silent = operator.post(close, {"version": letter.version, "action": "resolve", "reason": ""})
    assert silent.status_code == 400 and "a reason is required" in silent.content.decode()
    letter.refresh_from_db()
    assert letter.state == "new"

    said = {"version": letter.version, "action": "resolve", "reason": "QMS entered it by hand"}
    answer = operator.post(close, said, follow=True)
    assert answer.redirect_chain == [(page_of(letter), 302)]
    page = answer.content.decode()
    assert "Resolved: dealt with outside Tideline." in page and "Dry run" not in page
    letter.refresh_from_db()
    assert letter.state == "resolved"
    assert (
        '<strong>bob</strong> resolved it <span class="muted">· reason QMS entered it by hand'
        in page
    )
    entry = JournalEntry.objects.get(action="dead_letter.resolve")
    assert entry.details == {"reason": "QMS entered it by hand"} and entry.actor == "bob"


def test_an_in_doubt_replay_is_confirmed_delivered_by_the_operator(
    client_as: Callable[[Role | None], Client], letter: DeadLetter
) -> None:
    operator = client_as(Role.OPERATOR)
    replay(operator, letter)
    attempt = ReplayAttempt.objects.get()
    sent_at = timezone.now()
    ReplayAttempt.objects.filter(id=attempt.id).update(state="sending", sent_at=sent_at)
    unknown = transports.Outcome("unknown", "no answer from qms.internal within 2 s")
    replay_outcome_record(attempt_id=str(attempt.id), outcome=unknown, now=timezone.now())
    page = operator.get(page_of(letter)).content.decode()
    at = timezone.localtime(sent_at).strftime("%H:%M:%S")
    assert "The target may have received this at " in page
    assert f">{at}</time>; check the target, then confirm delivered or replay again." in page
    assert "Confirm delivered" in page and ">Replay</button>" in page

    assert operator.post(f"/replays/{attempt.id}/confirm").status_code == 302
    attempt.refresh_from_db()
    letter.refresh_from_db()
    assert attempt.state == "delivered" and letter.state == "replayed"
    again = operator.post(f"/replays/{attempt.id}/confirm")
    assert again.status_code == 409 and "Only an in-doubt replay" in again.content.decode()


def test_a_payload_with_a_script_is_shown_as_text(
    client_as: Callable[[Role | None], Client], runtime: Runtime
) -> None:
    script = "<script>alert('x')</script>"
    letter = dead_letter_of(
        runtime, payload=json.dumps({"note": script}), content_type="application/json",
        error=f"HTTP 400 {script}",
    )  # fmt: skip
    operator = client_as(Role.OPERATOR)
    for url in ("/dead-letters/", page_of(letter)):
        page = operator.get(url).content.decode()
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_posts_need_the_csrf_token(letter: DeadLetter, make_user: Callable[..., User]) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(make_user(Role.OPERATOR))
    assert replay(browser, letter).status_code == 403
    assert ReplayAttempt.objects.count() == 0


def test_an_unknown_dead_letter_is_not_found(client_as: Callable[[Role | None], Client]) -> None:
    assert client_as(Role.SUPPORT).get("/dead-letters/999999").status_code == 404
