"""evaluate(now): every active rule against the summary tables, one incident per rule and subject.

A new incident tells its channels once ("opened"); while it grows it is updated in place and
tells nobody; when its finding is gone it is resolved and each channel that heard it open
hears once more ("resolved"). A silenced incident tells nobody until the silence ends.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q

from tracing.alerts.channels import notification_body
from tracing.alerts.conditions import Finding, findings
from tracing.alerts.models import (
    ACTIVE_STATES,
    AlertRule,
    Channel,
    Incident,
    Notification,
    Silence,
)
from tracing.flows.models import Owner

logger = logging.getLogger(__name__)
EVALUATION_LOCK = "tideline.alerts.evaluate"
# Incident details that people add, kept when an evaluation refreshes the rest.
KEPT_DETAILS = ("bulk_replay",)


@dataclass
class Evaluated:
    opened: int = 0
    updated: int = 0
    resolved: int = 0
    notifications: int = 0
    failed_rules: list[str] = field(default_factory=list)
    skipped: bool = False  # another evaluation was running


def evaluate(*, now: datetime) -> Evaluated:
    """Evaluate every active rule at `now`; notifications are queued after each rule commits.

    One evaluation at a time (two would open the same incident twice), and a rule that fails
    is logged and passed over: one broken rule must not silence all the others.
    """
    result = Evaluated()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [EVALUATION_LOCK])
        if not cursor.fetchone()[0]:
            result.skipped = True
            return result
        try:
            for rule in AlertRule.objects.filter(is_active=True).prefetch_related("channels"):
                _rule_evaluate(rule, now, result)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [EVALUATION_LOCK])
    return result


def _rule_evaluate(rule: AlertRule, now: datetime, result: Evaluated) -> None:
    try:
        found = findings(rule, now=now)
        with transaction.atomic():
            _reconcile(rule, found, now, result)
    except Exception:
        logger.exception("alert rule %r could not be evaluated; the other rules go on", rule.name)
        result.failed_rules.append(rule.name)


def _reconcile(rule: AlertRule, found: list[Finding], now: datetime, result: Evaluated) -> None:
    active = {
        incident.subject: incident
        for incident in Incident.objects.select_for_update().filter(
            rule=rule, state__in=ACTIVE_STATES
        )
    }
    for finding in found:
        incident = active.pop(finding.subject, None)
        if incident is None:
            incident = _open(rule, finding, now)
            result.opened += 1
        else:
            _update(incident, finding, now)
            result.updated += 1
        if incident.state == Incident.State.OPEN and incident.notified_at is None:
            result.notifications += _tell(incident, Notification.Event.OPENED, finding.link, now)
    for incident in active.values():
        was_ignored = incident.state == Incident.State.IGNORED
        _resolve(incident, now)
        result.resolved += 1
        if not was_ignored:
            result.notifications += tell_resolved(incident, now)


def _open(rule: AlertRule, finding: Finding, now: datetime) -> Incident:
    return Incident.objects.create(
        rule=rule, subject=finding.subject, summary=finding.summary, count=finding.count,
        peak_count=finding.count, oldest_at=finding.oldest_at, owner=finding.owner,
        correlation_ids=finding.correlation_ids, details={**finding.details, "link": finding.link},
        opened_at=now, updated_at=now,
    )  # fmt: skip


def _update(incident: Incident, finding: Finding, now: datetime) -> None:
    incident.summary, incident.count, incident.oldest_at = (
        finding.summary, finding.count, finding.oldest_at,
    )  # fmt: skip
    incident.peak_count = max(incident.peak_count, finding.count)
    incident.correlation_ids = finding.correlation_ids
    # What people added (the bulk replay they started from it) outlives each evaluation.
    kept = {key: incident.details[key] for key in KEPT_DETAILS if key in incident.details}
    incident.details = {**finding.details, "link": finding.link, **kept}
    incident.owner = finding.owner or incident.owner
    incident.updated_at = now
    incident.save()


def _resolve(incident: Incident, now: datetime) -> None:
    incident.state, incident.resolved_at, incident.updated_at = Incident.State.RESOLVED, now, now
    incident.save(update_fields=["state", "resolved_at", "updated_at"])


def silenced(incident: Incident, now: datetime) -> bool:
    return (
        Silence.objects.filter(starts_at__lte=now, expires_at__gt=now)
        .filter(Q(rule=None) | Q(rule=incident.rule_id))
        .filter(Q(subject="") | Q(subject=incident.subject))
        .exists()
    )


def recipients(incident: Incident) -> list[Channel]:
    """The rule's own channels, and unless it says otherwise the owner's."""
    channels = [channel for channel in incident.rule.channels.all() if channel.is_active]
    if incident.rule.to_owner and incident.owner is not None:
        channels += [c for c in owner_channels(incident.owner) if c not in channels]
    return channels


def owner_channels(owner: Owner) -> list[Channel]:
    """An owner's e-mail and webhook as channels, made on first use (an owner's webhook gets
    a secret an admin can rotate to read it)."""
    from tracing.alerts.channels import secret_new, webhook_url_problem

    wanted = []
    if owner.email:
        wanted.append((Channel.Kind.EMAIL, {"email": owner.email}))
    if owner.webhook_url and not webhook_url_problem(owner.webhook_url):
        wanted.append((Channel.Kind.WEBHOOK, {"url": owner.webhook_url}))
    channels = []
    for kind, target in wanted:
        channel, made = Channel.objects.get_or_create(
            owner=owner, kind=kind,
            defaults={"name": _owner_channel_name(owner, kind), **target,
                      **({"secret": (secret := secret_new()), "secret_prefix": secret[:12]}
                         if kind == Channel.Kind.WEBHOOK else {})},
        )  # fmt: skip
        if not made and channel.target != target[next(iter(target))]:
            Channel.objects.filter(pk=channel.pk).update(**target)  # the owner's address changed
            channel.refresh_from_db()
        if channel.is_active:
            channels.append(channel)
    return channels


def _owner_channel_name(owner: Owner, kind: str) -> str:
    """ "Warehouse (email)", unless an admin already named a channel so (names are unique)."""
    name = f"{owner.team} ({kind})"
    if Channel.objects.filter(name=name).exists():
        name = f"{owner.team} ({kind}, owner {owner.pk})"
    return name


def _tell(incident: Incident, event: str, link: str, now: datetime) -> int:
    if silenced(incident, now):
        return 0
    made = [_notification(incident, channel, event, link, now) for channel in recipients(incident)]
    incident.notified_at = now
    incident.save(update_fields=["notified_at"])
    return sum(made)


def tell_resolved(incident: Incident, now: datetime) -> int:
    """Each channel that heard it open hears it resolved (callers skip incidents someone
    chose to ignore)."""
    if incident.notified_at is None or silenced(incident, now):
        return 0
    told = Channel.objects.filter(
        notifications__incident=incident, notifications__event=Notification.Event.OPENED
    )
    link = str(incident.details.get("link", ""))
    return sum(_notification(incident, c, Notification.Event.RESOLVED, link, now) for c in told)


def _notification(
    incident: Incident, channel: Channel, event: str, link: str, now: datetime
) -> int:
    from tracing.alerts.tasks import notification_deliver_task

    delivery_id = uuid.uuid4()
    notification, made = Notification.objects.get_or_create(
        incident=incident, channel=channel, event=event,
        defaults={
            "delivery_id": delivery_id, "next_attempt_at": now, "created_at": now,
            "body": notification_body(incident, event, delivery_id, link=link, now=now),
        },
    )  # fmt: skip
    if made:
        transaction.on_commit(lambda: notification_deliver_task.delay(notification.pk))
    return int(made)
