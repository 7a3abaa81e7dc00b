"""The issue's cases, time moved by passing `now`: one notification per incident per channel,
one "resolved" when it clears, through a real SMTP server and a real webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from console.access import Role
from tests.receivers import Receiver
from tests.tracing.alerts.conftest import Mailbox
from tests.tracing.seafood import Runtime, definitions_load
from tracing.alerts.evaluation import evaluate
from tracing.alerts.models import AlertRule, Channel, Incident, Notification
from tracing.alerts.selectors import incidents_for_flow
from tracing.alerts.services import incident_decide
from tracing.flows.models import FlowDefinition
from tracing.flows.services.missing import flows_missing_check
from tracing.flows.services.summary import flows_mark_stalled, flows_summarize
from tracing.ingest.models import DeadLetter

pytestmark = pytest.mark.django_db
Deliver = Callable[[datetime], int]


def last_friday() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=(today.weekday() - 4) % 7 + 7)


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


def webhook_channel(receiver: Receiver, name: str = "ops-slack") -> Channel:
    return Channel.objects.create(
        name=name, kind="webhook", url=receiver.url, secret="tla_test", secret_prefix="tla_test"
    )


def rule(name: str, kind: str, *, channels: tuple[Channel, ...] = (), **fields: Any) -> AlertRule:
    made = AlertRule.objects.create(name=name, kind=kind, **fields)
    made.channels.set(channels)
    return made


def stock_sync_runs(runtime: Runtime, first: datetime, last: datetime) -> None:
    at = first
    while at <= last:
        correlation = f"stock-sync-{at:%Y%m%d%H%M}"
        runtime.record("WMS", "stock.export", "delivered", at, correlation=correlation)
        runtime.record(
            "ERP", "stock.import", "delivered", at + timedelta(minutes=1), correlation=correlation
        )
        at += timedelta(minutes=15)
    runtime.send()


def check(now: datetime, deliver_due: Deliver) -> None:
    flows_missing_check(now=now)
    evaluate(now=now)
    deliver_due(now)


def posted(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(post["body"]) for post in receiver.deliveries]


def test_stock_sync_stopping_tells_each_channel_once_and_once_more_when_it_resumes(
    runtime: Runtime, smtp: Mailbox, receiver: Receiver, deliver_due: Deliver
) -> None:
    friday = last_friday()
    stock_sync_runs(runtime, friday + timedelta(hours=20), friday + timedelta(hours=22, minutes=15))
    flows_summarize(now=friday + timedelta(hours=22, minutes=20))
    FlowDefinition.objects.update(created_at=friday)
    rule("stock export", "missing", definition="stock-sync", channels=(webhook_channel(receiver),))

    check(friday + timedelta(hours=22, minutes=34), deliver_due)
    assert not smtp.messages and not receiver.deliveries, "within interval + grace: nobody is told"

    check(friday + timedelta(hours=22, minutes=35), deliver_due)
    for minutes in range(36, 24 * 60, 97):  # all night: it grows, nobody is told again
        check(friday + timedelta(hours=22, minutes=minutes), deliver_due)
    assert [m["To"] for m in smtp.messages] == ["warehouse@seafood.example"], "the owner, once"
    assert [body["event"] for body in posted(receiver)] == ["opened"], "the rule's channel, once"
    opened = posted(receiver)[0]
    assert (
        opened["summary"]
        == "stock-sync: no run since Fri 22:15 — expected every 15 min; 1 run missed."
    )
    assert opened["text"].startswith("Alert: stock-sync: no run since Fri 22:15")
    assert opened["links"]["incident"].startswith(
        "https://tideline.seafood.example/alerts/incidents/"
    )
    incident = Incident.objects.get()
    assert incident.state == "open" and "runs missed" in incident.summary and incident.count > 1
    assert "stock-sync: no run since Fri 22:15" in smtp.messages[0]["Subject"]

    monday = friday + timedelta(days=3, hours=7)
    stock_sync_runs(runtime, monday, monday)
    flows_summarize(now=monday + timedelta(minutes=2))
    check(monday + timedelta(minutes=3), deliver_due)
    check(monday + timedelta(minutes=4), deliver_due)
    assert [body["event"] for body in posted(receiver)] == ["opened", "resolved"]
    assert len(smtp.messages) == 2 and str(smtp.messages[1]["Subject"]).strip().startswith(
        "[Tideline] Resolved:"
    )
    incident.refresh_from_db()
    assert incident.state == "resolved"
    assert Incident.objects.count() == 1


def test_twelve_orders_stalled_at_one_step_are_one_notification_naming_twelve(
    runtime: Runtime, smtp: Mailbox, deliver_due: Deliver, client_as
) -> None:
    support = client_as(Role.SUPPORT)
    start = timezone.now() - timedelta(hours=5)
    for number in range(12):
        runtime.order(
            f"PO-{4700 + number}", start + timedelta(minutes=number), until="production.notify"
        )
    runtime.send()
    flows_summarize(now=start + timedelta(hours=1))
    now = start + timedelta(hours=3, minutes=52)
    flows_mark_stalled(now=now)
    rule("certificates", "flow_stalled", definition="order-to-invoice", step="certificate_approved")

    evaluate(now=now)
    evaluate(now=now + timedelta(minutes=1))
    deliver_due(now + timedelta(minutes=1))

    incident = Incident.objects.get()
    assert incident.count == 12
    assert incident.summary.startswith(
        "12 orders stalled at Certificate approved (QMS) — oldest 3 h 3"
    ), incident.summary
    assert [m["To"] for m in smtp.messages] == ["quality@seafood.example"]
    assert "12 orders stalled at Certificate approved (QMS)" in smtp.messages[0]["Subject"]
    html = next(p for p in smtp.messages[0].walk() if p.get_content_type() == "text/html")
    assert "/alerts/incidents/" in html.get_content()  # type: ignore[attr-defined]
    assert [i.pk for i in incidents_for_flow("PO-4705")] == [incident.pk], "was anyone alerted?"
    page = support.get("/flows/PO-4705").content.decode()
    assert "Was anyone alerted?" in page
    assert "12 orders stalled at Certificate approved (QMS)" in page
    assert f"/alerts/incidents/{incident.pk}" in page
    assert "told quality" in page.lower() and "(opened)" in page


def test_a_sender_gone_silent_is_one_notification(
    runtime: Runtime, receiver: Receiver, deliver_due: Deliver
) -> None:
    now = timezone.now()
    runtime.record("WMS", "stock.export", "delivered", now, correlation="stock-sync-x")
    runtime.send()
    rule("runtime quiet", "sender_silent", sender="runtime-prod", duration_seconds=600,
         channels=(webhook_channel(receiver),))  # fmt: skip

    for minutes in (5, 9, 12, 15, 40):
        evaluate(now=now + timedelta(minutes=minutes))
        deliver_due(now + timedelta(minutes=minutes))
    bodies = posted(receiver)
    assert [body["event"] for body in bodies] == ["opened"]
    assert bodies[0]["summary"].startswith("runtime-prod has sent nothing for 1")


def test_drift_between_two_steps_beyond_the_threshold_is_one_notification(
    runtime: Runtime, receiver: Receiver, deliver_due: Deliver
) -> None:
    start = timezone.now() - timedelta(hours=2)
    for number in range(6):
        runtime.order(
            f"PO-{5100 + number}", start + timedelta(minutes=number), until="order.create"
        )
    runtime.order("PO-5200", start, until="stock.reserve")
    runtime.send()
    flows_summarize(now=start + timedelta(minutes=10))
    rule("reservations", "drift", definition="order-to-invoice", step="order_created",
         to_step="stock_reserved", threshold=5, duration_seconds=1800, to_owner=False,
         channels=(webhook_channel(receiver),))  # fmt: skip

    evaluate(now=start + timedelta(minutes=25))
    assert not Incident.objects.exists(), "not yet sitting there for 30 min"
    for minutes in (36, 40, 90):
        evaluate(now=start + timedelta(minutes=minutes))
        deliver_due(start + timedelta(minutes=minutes))
    bodies = posted(receiver)
    assert [body["event"] for body in bodies] == ["opened"]
    assert bodies[0]["summary"].startswith(
        "6 orders did Order created (ERP) but not Stock reserved (WMS) for over 30 min — oldest 3"
    )
    assert "definition=order-to-invoice" in bodies[0]["links"]["list"]


def test_a_silenced_incident_tells_nobody_until_the_silence_ends(
    runtime: Runtime, receiver: Receiver, deliver_due: Deliver
) -> None:
    from tracing.alerts.services import silence_create

    now = timezone.now()
    runtime.dead_letter("QMS", now - timedelta(minutes=10), correlation="PO-1")
    dead = rule("qms letters", "dead_letters", system="QMS", threshold=0, to_owner=False,
                channels=(webhook_channel(receiver),))  # fmt: skip
    silence_create(rule=dead, subject="", seconds=3600, reason="QMS upgrade", actor="test", now=now)
    evaluate(now=now + timedelta(minutes=5))
    deliver_due(now + timedelta(minutes=5))
    assert Incident.objects.get().notified_at is None and not receiver.deliveries
    evaluate(now=now + timedelta(minutes=61))
    deliver_due(now + timedelta(minutes=61))
    assert [body["event"] for body in posted(receiver)] == ["opened"]
    assert Notification.objects.count() == 1


def test_a_ledger_that_no_longer_verifies_is_one_notification(
    receiver: Receiver, deliver_due: Deliver, settings
) -> None:
    from django.core.management import call_command
    from django.db import connection

    from console.services import journal_append
    from tracing.ledger.note import signing_key_generate
    from tracing.ledger.services import ledger_checkpoint, ledger_sequence

    settings.TIDELINE_SIGNING_KEY = signing_key_generate("alerts.test/tideline/1").text()
    for number in range(5):
        journal_append(actor="test", action="login", subject=f"user:{number}")
    ledger_sequence(now=timezone.now())
    ledger_checkpoint(now=timezone.now())
    rule("ledger", "ledger", to_owner=False, channels=(webhook_channel(receiver),))
    call_command("ledger", "verify", "--full")
    evaluate(now=timezone.now() + timedelta(seconds=1))
    assert not Incident.objects.exists(), "a ledger that verifies raises nothing"

    with connection.cursor() as cursor:  # a superuser rewrites entry 3 behind the trigger
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE ledger_entry SET body = convert_to(replace(convert_from(body, 'UTF8'), "
            "'login', 'logout'), 'UTF8') WHERE index = 3"
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    with pytest.raises(SystemExit):
        call_command("ledger", "verify", "--full")
    for seconds in (2, 60, 120):
        evaluate(now=timezone.now() + timedelta(seconds=seconds))
        deliver_due(timezone.now() + timedelta(seconds=seconds))
    bodies = posted(receiver)
    assert [body["event"] for body in bodies] == ["opened"]
    assert "Ledger verification failed" in bodies[0]["summary"]
    assert "entry 3" in bodies[0]["summary"]


def test_a_channel_named_like_an_owners_own_does_not_stop_the_alerting(
    runtime: Runtime, smtp: Mailbox, receiver: Receiver, deliver_due: Deliver
) -> None:
    """An admin's channel "Quality (email)" once made every evaluation fail on the unique
    name when the owner's own channel was first made: nobody heard of anything."""
    webhook_channel(receiver, name="Quality (email)")
    now = timezone.now()
    runtime.dead_letter("QMS", now - timedelta(minutes=10), correlation="PO-1")
    runtime.dead_letter("WMS", now - timedelta(minutes=10), correlation="PO-2")
    rule("qms letters", "dead_letters", system="QMS", threshold=0)
    rule("wms letters", "dead_letters", system="WMS", threshold=0)

    result = evaluate(now=now)
    deliver_due(now)

    assert result.opened == 2 and not result.failed_rules
    assert "quality@seafood.example" in [m["To"] for m in smtp.messages]
    assert (
        Channel.objects.filter(email="quality@seafood.example")
        .get()
        .name.startswith("Quality (email, owner")
    )


def test_an_ignored_incident_that_clears_tells_nobody(
    runtime: Runtime, receiver: Receiver, deliver_due: Deliver
) -> None:
    now = timezone.now()
    runtime.dead_letter("QMS", now - timedelta(minutes=10), correlation="PO-1")
    rule("qms letters", "dead_letters", system="QMS", threshold=0, to_owner=False,
         channels=(webhook_channel(receiver),))  # fmt: skip
    check(now, deliver_due)
    incident = Incident.objects.get()
    incident_decide(incident_id=incident.pk, action="ignore", actor="bob", now=now)
    DeadLetter.objects.update(state=DeadLetter.State.DISCARDED)

    check(now + timedelta(minutes=5), deliver_due)

    incident.refresh_from_db()
    assert incident.state == "resolved"
    assert [body["event"] for body in posted(receiver)] == ["opened"]
