"""The alert pages: bad input says why and saves nothing; people act on incidents, journaled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from console.access import Role
from console.models import JournalEntry
from replay.models import BulkReplay
from tests.receivers import Receiver
from tests.tracing.seafood import Runtime, definitions_load
from tracing.alerts.evaluation import evaluate
from tracing.alerts.models import AlertRule, Channel, Incident, Silence
from tracing.ingest.models import DeadLetter

pytestmark = pytest.mark.django_db
ClientAs = Callable[[Role | None], Client]


@pytest.fixture(autouse=True)
def seafood() -> None:
    definitions_load()


RULE = {
    "name": "certificates", "kind": "flow_stalled", "definition": "order-to-invoice",
    "step": "certificate_approved", "threshold": "1", "to_owner": "on", "is_active": "on",
}  # fmt: skip


def test_an_admin_makes_a_rule_and_the_change_is_journaled(client_as: ClientAs) -> None:
    response = client_as(Role.ADMIN).post("/alerts/rules/new", RULE)
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.definition, rule.step) == ("order-to-invoice", "certificate_approved")
    entry = JournalEntry.objects.get(action="alert_rule.create")
    assert entry.actor == "dana" and entry.details["step"] == "certificate_approved"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"definition": "order-to-nowhere"}, "definition", "There is no flow definition named 'order-to-nowhere'."),
        ({"step": "certificate_signed"}, "step", "'certificate_signed' is not a step of order-to-invoice."),
        ({"kind": "dead_letters", "definition": "", "step": "", "system": "SAP"}, "system", "There is no system named 'SAP'."),
        ({"kind": "drift", "duration": ""}, "duration", "This kind of rule needs it."),
        ({"kind": "sender_silent", "duration": "soon"}, "duration", "'soon' is not a duration such as 90s, 15m, 2h or 1d."),
        ({"kind": "sender_silent", "duration": "99999999d"}, "duration", "'99999999d' is longer than 366 days."),
    ],
)  # fmt: skip
def test_a_rule_that_refers_to_nothing_is_refused_and_nothing_is_saved(
    client_as: ClientAs, changes: dict[str, str], field: str, words: str
) -> None:
    response = client_as(Role.ADMIN).post("/alerts/rules/new", {**RULE, **changes})
    assert response.status_code == 400
    assert words in response.context["form"].errors[field]
    assert "Nothing was saved" in response.content.decode()
    assert not AlertRule.objects.exists()
    assert not JournalEntry.objects.filter(action__startswith="alert_rule").exists()


def test_a_webhook_off_the_allow_list_or_a_bad_address_is_refused(
    client_as: ClientAs, settings: Any
) -> None:
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = ["hooks.slack.com"]
    admin = client_as(Role.ADMIN)
    response = admin.post("/alerts/channels/", {
        "action": "create", "name": "exfil", "kind": "webhook", "url": "https://evil.example/hook",
    })  # fmt: skip
    assert response.status_code == 400
    assert "evil.example is not on the webhook allow-list" in response.content.decode()
    response = admin.post("/alerts/channels/", {
        "action": "create", "name": "ops", "kind": "email", "email": "ops at seafood",
    })  # fmt: skip
    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert not Channel.objects.exists()


def test_a_webhook_channel_shows_its_secret_once(client_as: ClientAs, settings: Any) -> None:
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = ["hooks.slack.com"]
    admin = client_as(Role.ADMIN)
    response = admin.post("/alerts/channels/", {
        "action": "create", "name": "ops-slack", "kind": "webhook",
        "url": "https://hooks.slack.com/services/T0/B0/xyz",
    })  # fmt: skip
    channel = Channel.objects.get()
    assert response.status_code == 200 and channel.secret in response.content.decode()
    assert channel.secret not in admin.get("/alerts/channels/").content.decode()
    journaled = str(JournalEntry.objects.get(action="alert_channel.create").details)
    assert channel.secret not in journaled
    # The URL is Slack's credential: the journal, which nobody can erase, names its host only.
    assert "T0/B0/xyz" not in journaled and "https://hooks.slack.com/" in journaled


def dead_letter_incident(receiver: Receiver | None = None) -> Incident:
    runtime = Runtime.connected()
    for number in range(3):
        runtime.dead_letter(
            "QMS", timezone.now() - timedelta(minutes=5), correlation=f"PO-{number}"
        )
    runtime.dead_letter("TMS", timezone.now(), correlation="PO-9")
    AlertRule.objects.create(name="qms", kind="dead_letters", system="QMS", threshold=2)
    evaluate(now=timezone.now())
    return Incident.objects.get()


def test_an_operator_acknowledges_and_support_may_only_read(client_as: ClientAs) -> None:
    incident = dead_letter_incident()
    support = client_as(Role.SUPPORT)
    page = support.get(f"/alerts/incidents/{incident.pk}")
    assert page.status_code == 200
    assert "3 dead letters waiting for QMS" in page.content.decode()
    assert "Acknowledge" not in page.content.decode()
    decide = f"/alerts/incidents/{incident.pk}/decide"
    assert support.post(decide, {"action": "acknowledge"}).status_code == 403

    operator = client_as(Role.OPERATOR)
    assert operator.post(decide, {"action": "acknowledge"}).status_code == 302
    incident.refresh_from_db()
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "bob")
    assert JournalEntry.objects.filter(action="alert_incident.acknowledge", actor="bob").exists()
    assert "bob is on it" in operator.get(f"/alerts/incidents/{incident.pk}").content.decode()


def test_from_a_dead_letter_incident_an_operator_replays_exactly_those(
    client_as: ClientAs,
) -> None:
    incident = dead_letter_incident()
    later = Runtime.connected()
    later.dead_letter("QMS", timezone.now(), correlation="PO-late")  # after the incident saw them

    operator = client_as(Role.OPERATOR)
    response = operator.post(f"/alerts/incidents/{incident.pk}/replay")
    assert response.status_code == 302
    job = BulkReplay.objects.get()
    assert job.matched == 3
    assert job.selection["system"] == "QMS"
    late = DeadLetter.objects.get(correlation_id="PO-late")
    assert job.selection["up_to_id"] < late.pk
    assert JournalEntry.objects.filter(action="bulk_replay.create", actor="bob").exists()
    assert job.rate_per_second == 10, "a target that just came back is not flooded"
    evaluate(now=timezone.now())  # the incident is refreshed, its bulk replay stays on it
    page = operator.get(f"/alerts/incidents/{incident.pk}").content.decode()
    assert "Bulk replay" in page and str(job.pk) in page


def test_a_rule_edited_keeps_its_duration_to_the_second(client_as: ClientAs) -> None:
    admin = client_as(Role.ADMIN)
    admin.post("/alerts/rules/new", {**RULE, "kind": "sender_silent", "definition": "",
                                     "step": "", "duration": "90s"})  # fmt: skip
    rule = AlertRule.objects.get()
    form = admin.get(f"/alerts/rules/{rule.pk}").context["form"]
    assert form.initial["duration"] == "90s" and rule.duration_seconds == 90


def test_a_silence_is_journaled_with_its_reason(client_as: ClientAs) -> None:
    operator = client_as(Role.OPERATOR)
    endless = operator.post("/alerts/silences/new", {"duration": "9999999d", "reason": "forever"})
    assert endless.status_code == 400 and "longer than 366 days" in endless.content.decode()
    assert (
        operator.post("/alerts/silences/new", {"action": "end", "silence": "²"}).status_code == 404
    )
    response = operator.post(
        "/alerts/silences/new", {"duration": "2h", "reason": "QMS upgrade tonight"}
    )
    assert response.status_code == 302
    silence = Silence.objects.get()
    assert silence.expires_at - silence.starts_at == timedelta(hours=2)
    assert JournalEntry.objects.get(action="alert_silence.create").details["reason"] == (
        "QMS upgrade tonight"
    )


def test_the_history_lists_every_notification_and_its_attempts(client_as: ClientAs) -> None:
    incident = dead_letter_incident()
    page = client_as(Role.AUDITOR).get("/alerts/history/").content.decode()
    notification = incident.notifications.get()
    assert str(notification.delivery_id) in page
    assert "quality@seafood.example" in str(notification.channel.email)
    assert "none yet" in page
