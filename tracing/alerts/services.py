"""What people do with alerts, one function per use case, each journaled."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from console.services import journal_append
from replay.bulk import Selection, bulk_replay_create
from replay.models import BulkReplay
from replay.services import ReplayRefused
from tracing.alerts.channels import secret_new
from tracing.alerts.evaluation import tell_resolved
from tracing.alerts.forms import AlertRuleForm, ChannelForm
from tracing.alerts.models import AlertRule, Channel, Incident, Silence, WebhookHost

if TYPE_CHECKING:
    from django.http import HttpRequest

    from console.services import Actor


class IncidentRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def rule_facts(rule: AlertRule) -> dict[str, Any]:
    return {
        "kind": rule.kind, "definition": rule.definition, "system": rule.system, "step": rule.step,
        "to_step": rule.to_step, "sender": rule.sender, "threshold": rule.threshold,
        "duration_seconds": rule.duration_seconds, "to_owner": rule.to_owner,
        "channels": sorted(c.name for c in rule.channels.all()), "active": rule.is_active,
    }  # fmt: skip


def rule_facts_proposed(form: AlertRuleForm) -> dict[str, Any]:
    """What a valid form would make of its rule, in rule_facts' words: an import leaves a rule
    whose facts would not change alone, so importing the same file twice journals nothing."""
    data = form.cleaned_data
    return {
        "kind": data["kind"], "definition": data["definition"], "system": data["system"],
        "step": data["step"], "to_step": data["to_step"], "sender": data["sender"],
        "threshold": data["threshold"], "duration_seconds": data["duration"],
        "to_owner": data["to_owner"], "channels": sorted(c.name for c in data["channels"]),
        "active": data["is_active"],
    }  # fmt: skip


def alert_rule_save(
    *, form: AlertRuleForm, actor: Actor, request: HttpRequest | None = None
) -> AlertRule:
    """Create or change a rule from a valid form."""
    creating = form.instance.pk is None
    with transaction.atomic():
        rule = form.save(commit=False)
        if creating:
            rule.created_by = getattr(actor, "username", str(actor or ""))
        rule.updated_at = timezone.now()
        rule.save()
        form.save_m2m()
        journal_append(
            actor=actor, action="alert_rule.create" if creating else "alert_rule.change",
            subject=f"alert_rule:{rule.pk}", details={"name": rule.name, **rule_facts(rule)},
            request=request,
        )  # fmt: skip
    return rule


def alert_rule_delete(*, rule: AlertRule, actor: Actor, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        facts = {"name": rule.name, **rule_facts(rule)}
        subject = f"alert_rule:{rule.pk}"
        rule.delete()
        journal_append(
            actor=actor, action="alert_rule.delete", subject=subject, details=facts, request=request
        )


def channel_target_journaled(channel: Channel) -> str:
    """What the append-only journal keeps of a channel's target: a webhook URL often is its
    own credential (Slack, Teams), so only its host and a digest to match it by."""
    if channel.kind != Channel.Kind.WEBHOOK:
        return channel.target
    address = urlsplit(channel.target)
    digest = hashlib.sha256(channel.target.encode()).hexdigest()
    return f"{address.scheme}://{address.hostname}/… (sha256 {digest})"


def channel_create(
    *, form: ChannelForm, actor: Actor, request: HttpRequest | None = None
) -> tuple[Channel, str]:
    """A new channel; for a webhook also its signing secret, to be shown this once."""
    with transaction.atomic():
        channel = form.save(commit=False)
        secret = ""
        if channel.kind == Channel.Kind.WEBHOOK:
            secret = secret_new()
            channel.secret, channel.secret_prefix = secret, secret[:12]
        channel.save()
        journal_append(
            actor=actor, action="alert_channel.create", subject=f"alert_channel:{channel.pk}",
            details={"name": channel.name, "kind": channel.kind,
                     "target": channel_target_journaled(channel), "secret_prefix": channel.secret_prefix},
            request=request,
        )  # fmt: skip
    return channel, secret


def channel_secret_rotate(
    *, channel: Channel, actor: Actor, request: HttpRequest | None = None
) -> str:
    secret = secret_new()
    with transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(secret=secret, secret_prefix=secret[:12])
        journal_append(
            actor=actor, action="alert_channel.rotate", subject=f"alert_channel:{channel.pk}",
            details={"name": channel.name, "secret_prefix": secret[:12]}, request=request,
        )  # fmt: skip
    return secret


def channel_active_set(
    *, channel: Channel, active: bool, actor: Actor, request: HttpRequest | None = None
) -> None:
    with transaction.atomic():
        Channel.objects.filter(pk=channel.pk).update(is_active=active)
        journal_append(
            actor=actor, action="alert_channel.enable" if active else "alert_channel.disable",
            subject=f"alert_channel:{channel.pk}", details={"name": channel.name}, request=request,
        )  # fmt: skip


def webhook_host_add(
    *, host: str, note: str, actor: Actor, request: HttpRequest | None = None
) -> WebhookHost:
    with transaction.atomic():
        kept, _ = WebhookHost.objects.get_or_create(host=host, defaults={"note": note})
        journal_append(actor=actor, action="alert_webhook_host.add", subject=f"webhook_host:{host}",
                       details={"note": note}, request=request)  # fmt: skip
    return kept


def webhook_host_remove(
    *, host: WebhookHost, actor: Actor, request: HttpRequest | None = None
) -> None:
    with transaction.atomic():
        host.delete()
        journal_append(actor=actor, action="alert_webhook_host.remove",
                       subject=f"webhook_host:{host.host}", request=request)  # fmt: skip


# Incidents

DECISIONS = {
    "acknowledge": (Incident.State.OPEN,),
    "ignore": (Incident.State.OPEN, Incident.State.ACKNOWLEDGED),
    "resolve": (Incident.State.OPEN, Incident.State.ACKNOWLEDGED, Incident.State.IGNORED),
}


def incident_decide(
    *,
    incident_id: int,
    action: str,
    actor: Actor,
    now: datetime,
    request: HttpRequest | None = None,
) -> Incident:
    """Acknowledge (someone is on it: no more notifications), ignore, or resolve by hand."""
    if action not in DECISIONS:
        raise IncidentRefused(f"{action!r} is not something one does to an incident.")
    name = getattr(actor, "username", str(actor or ""))
    with transaction.atomic():
        incident = Incident.objects.select_for_update().select_related("rule").get(pk=incident_id)
        if incident.state not in DECISIONS[action]:
            raise IncidentRefused(f"This incident is {incident.state}; it cannot be {action}d now.")
        was_ignored = incident.state == Incident.State.IGNORED
        if action == "acknowledge":
            incident.state, incident.acknowledged_by, incident.acknowledged_at = (
                Incident.State.ACKNOWLEDGED, name, now,
            )  # fmt: skip
        elif action == "ignore":
            incident.state, incident.ignored_by = Incident.State.IGNORED, name
        else:
            incident.state, incident.resolved_at = Incident.State.RESOLVED, now
        incident.updated_at = now
        incident.save()
        if action == "resolve" and not was_ignored:
            tell_resolved(incident, now)
        journal_append(
            actor=actor, action=f"alert_incident.{action}", subject=f"alert_incident:{incident.pk}",
            details={"rule": incident.rule.name, "subject": incident.subject, "summary": incident.summary},
            request=request,
        )  # fmt: skip
    return incident


# Messages per second of a bulk replay started from an incident: the target has often only
# just come back, and every dead letter at once could knock it over again.
INCIDENT_REPLAY_RATE = 10


def incident_bulk_replay(
    *, incident: Incident, actor: Actor, now: datetime, request: HttpRequest | None = None
) -> BulkReplay:
    """A bulk replay of the dead letters this incident counted: its system, up to the highest
    dead letter it saw (later ones are not its business), through replay's own service."""
    if incident.rule.kind != AlertRule.Kind.DEAD_LETTERS or not incident.details.get("system"):
        raise IncidentRefused("Only an incident about dead letters can start a bulk replay.")
    selection = Selection(
        system=incident.details["system"], up_to_id=incident.details.get("up_to_id")
    )
    try:
        job = bulk_replay_create(
            selection=selection, rate_per_second=INCIDENT_REPLAY_RATE, include_stale=False,
            reason=f"Alert incident {incident.pk}: {incident.summary}", actor=actor, now=now, request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        raise IncidentRefused(refused.message) from None
    Incident.objects.filter(pk=incident.pk).update(
        details={**incident.details, "bulk_replay": str(job.pk)}
    )
    return job


# Silences


def silence_create(
    *, rule: AlertRule | None, subject: str, seconds: int, reason: str, actor: Actor, now: datetime,
    request: HttpRequest | None = None,
) -> Silence:  # fmt: skip
    with transaction.atomic():
        silence = Silence.objects.create(
            rule=rule, subject=subject, reason=reason, starts_at=now,
            expires_at=now + timedelta(seconds=seconds), created_by=getattr(actor, "username", str(actor or "")),
        )  # fmt: skip
        journal_append(
            actor=actor, action="alert_silence.create", subject=f"alert_silence:{silence.pk}",
            details={"rule": rule.name if rule else None, "subject": subject, "reason": reason,
                     "expires_at": silence.expires_at.isoformat()},
            request=request,
        )  # fmt: skip
    return silence


def silence_end(
    *, silence: Silence, actor: Actor, now: datetime, request: HttpRequest | None = None
) -> None:
    with transaction.atomic():
        Silence.objects.filter(pk=silence.pk, expires_at__gt=now).update(expires_at=now)
        journal_append(actor=actor, action="alert_silence.end", subject=f"alert_silence:{silence.pk}",
                       details={"reason": silence.reason}, request=request)  # fmt: skip
