"""What each kind of rule finds at `now`: one Finding per subject, read from the summary tables.

A finding is what an incident will say: how many, since when, a sentence, the owner to tell,
and the flows it covers. Nothing here writes; evaluation.py turns findings into incidents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, DateTimeField, Max, Min
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.urls import reverse

from console.models import IngestToken
from tracing.alerts.ledger_check import ledger_verification_latest
from tracing.alerts.models import AlertRule
from tracing.flows.dashboard import DEAD_LETTER_OPEN
from tracing.flows.expectations import duration_words
from tracing.flows.models import FlowDefinition, FlowInstance, FlowStep, Missing, Owner, System
from tracing.ingest.models import DeadLetter, SenderMinute

FLOWS_KEPT = 200  # correlation IDs an incident remembers, for the flow page and its list
SENDERS_LOOKBACK = timedelta(days=7)  # "every sender": those heard from in the last week
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Finding:
    subject: str
    count: int
    summary: str
    oldest_at: datetime | None = None
    owner: Owner | None = None
    link: str = ""  # the console's list behind it, as a path
    correlation_ids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def findings(rule: AlertRule, *, now: datetime) -> list[Finding]:
    return FINDERS[rule.kind](rule, now)


def _age(now: datetime, since: datetime | None) -> str:
    return duration_words(max(0, int((now - since).total_seconds()))) if since else "unknown"


def _current_steps(names: set[str]) -> dict[tuple[str, str], FlowStep]:
    steps = FlowStep.objects.filter(
        definition__name__in=names, definition__is_current=True
    ).select_related("system__owner", "definition__owner")
    return {(step.definition.name, step.key): step for step in steps}


def _noun(definition: FlowDefinition | None, count: int) -> str:
    noun = str((definition.volume or {}).get("noun") or "") if definition else ""
    noun = noun or "flows"
    return noun.removesuffix("s") if count == 1 and noun.endswith("s") else noun


def _flow_ids(flows: Any) -> list[str]:
    return list(
        flows.order_by("last_activity_at").values_list("correlation_id", flat=True)[:FLOWS_KEPT]
    )


# Flows stalled or failed: one incident per definition and step they stopped at


def _flows_in(status: str) -> Callable[[AlertRule, datetime], list[Finding]]:
    def find(rule: AlertRule, now: datetime) -> list[Finding]:
        flows = FlowInstance.objects.filter(status=status)
        if rule.definition:
            flows = flows.filter(definition__name=rule.definition)
        if rule.step:
            flows = flows.filter(stopped_at=rule.step)
        groups = list(
            flows.values("definition__name", "stopped_at")
            .annotate(affected=Count("pk"), oldest=Min("last_activity_at"))
            .order_by()
        )
        steps = _current_steps({g["definition__name"] for g in groups if g["definition__name"]})
        found = []
        for group in groups:
            name, key = group["definition__name"] or "", group["stopped_at"]
            step = steps.get((name, key))
            if rule.system and (step is None or step.system.name != rule.system):
                continue
            if group["affected"] < rule.threshold:
                continue
            these = flows.filter(definition__name=name, stopped_at=key)
            found.append(_flows_finding(status, name, key, step, group, these, now))
        return found

    return find


def _flows_finding(
    status: str, name: str, key: str, step: FlowStep | None, group: dict[str, Any],
    flows: Any, now: datetime,
) -> Finding:  # fmt: skip
    count = group["affected"]
    definition = (
        step.definition
        if step
        else FlowDefinition.objects.filter(name=name, is_current=True).first()
    )
    where = f"{step.title} ({step.system.name})" if step else (key or "an unknown step")
    owner = step.system.owner if step else (definition.owner if definition else None)
    return Finding(
        subject=f"{name or '(no definition)'} at {key or '(start)'}",
        count=count,
        oldest_at=group["oldest"],
        summary=f"{count} {_noun(definition, count)} {status} at {where} — oldest {_age(now, group['oldest'])}",
        owner=owner,
        correlation_ids=_flow_ids(flows),
        details={"definition": name, "step": key, "status": status},
    )


# Missing: a scheduled run or a window's volume that did not come


def _missing(rule: AlertRule, now: datetime) -> list[Finding]:
    rows = Missing.objects.filter(raised_at__lte=now).select_related("definition__owner")
    if rule.definition:
        rows = rows.filter(definition_name=rule.definition)
    schedule = rows.filter(kind=Missing.Kind.SCHEDULE, cleared_at=None)
    found = [_missing_finding(row, row.definition_name, now) for row in schedule]
    # A short window stays an incident until the next window has had time to close.
    for row in rows.filter(kind=Missing.Kind.VOLUME, window_end__gte=now - timedelta(days=1)):
        per = timedelta(seconds=int((row.definition.volume or {}).get("per_seconds") or 3600))
        if row.window_end and row.window_end + per > now:
            found.append(
                _missing_finding(
                    row, f"{row.definition_name} volume {row.window_start:%Y-%m-%d %H:%M}", now
                )
            )
    return found


def _missing_finding(row: Missing, subject: str, now: datetime) -> Finding:
    return Finding(
        subject=subject,
        count=row.count,
        oldest_at=row.overdue_since,
        summary=row.sentence,
        owner=row.definition.owner,
        link="/",
        details={"definition": row.definition_name, "missing": row.kind},
    )


# Drift: more than N flows sitting between two steps for longer than T


def _drift(rule: AlertRule, now: datetime) -> list[Finding]:
    since = now - timedelta(seconds=rule.duration_seconds or 0)
    flows = (
        FlowInstance.objects.filter(
            definition__name=rule.definition, steps_done__contains=[rule.step]
        )
        .exclude(steps_done__contains=[rule.to_step])
        .exclude(status=FlowInstance.Status.COMPLETED)
        .annotate(from_at=Cast(KT(f"steps__{rule.step}__last_at"), DateTimeField()))
        .filter(from_at__lte=since)
    )
    tally = flows.aggregate(affected=Count("pk"), oldest=Min("from_at"))
    if tally["affected"] <= rule.threshold:
        return []
    steps = _current_steps({rule.definition})
    first, then = (
        steps.get((rule.definition, rule.step)),
        steps.get((rule.definition, rule.to_step)),
    )
    if first is None or then is None:
        return []
    count = tally["affected"]
    words = f"{first.title} ({first.system.name}) but not {then.title} ({then.system.name})"
    query = urlencode({"window": "week", "definition": rule.definition, "step": rule.to_step})
    return [
        Finding(
            subject=f"{rule.definition} {rule.step} → {rule.to_step}",
            count=count,
            oldest_at=tally["oldest"],
            summary=f"{count} {_noun(first.definition, count)} did {words} for over "
            f"{duration_words(rule.duration_seconds or 0)} — oldest {_age(now, tally['oldest'])}",
            owner=then.system.owner,
            link=f"{reverse('dashboard')}?{query}",
            correlation_ids=list(
                flows.order_by("from_at").values_list("correlation_id", flat=True)[:FLOWS_KEPT]
            ),
            details={"definition": rule.definition, "from": rule.step, "to": rule.to_step},
        )
    ]


# Dead letters waiting for one system


def _dead_letters(rule: AlertRule, now: datetime) -> list[Finding]:
    letters = DeadLetter.objects.filter(state__in=DEAD_LETTER_OPEN)
    if rule.system:
        letters = letters.filter(system=rule.system)
    groups = (
        letters.values("system")
        .annotate(depth=Count("pk"), oldest=Min("first_failed_at"), up_to=Max("id"))
        .order_by()
    )
    owners = {s.name: s.owner for s in System.objects.select_related("owner")}
    found = []
    for group in groups:
        if group["depth"] <= rule.threshold:
            continue
        system, depth = group["system"], group["depth"]
        flows = letters.filter(system=system, correlation_id__isnull=False)
        found.append(Finding(
            subject=system, count=depth, oldest_at=group["oldest"],
            summary=f"{depth} dead letter{'s' if depth != 1 else ''} waiting for {system} — oldest {_age(now, group['oldest'])}",
            owner=owners.get(system), link=f"{reverse('dead-letters')}?{urlencode({'system': system})}",
            correlation_ids=[str(c) for c in flows.values_list("correlation_id", flat=True).distinct()[:FLOWS_KEPT]],
            details={"system": system, "up_to_id": group["up_to"]},
        ))  # fmt: skip
    return found


# A sender gone silent: a non-event at the edge


def _sender_silent(rule: AlertRule, now: datetime) -> list[Finding]:
    quiet_for = timedelta(seconds=rule.duration_seconds or 0)
    heard = SenderMinute.objects.filter(minute__lte=now)
    if rule.sender:
        heard = heard.filter(sender=rule.sender)
    else:
        heard = heard.filter(minute__gte=now - SENDERS_LOOKBACK)
    last_heard = dict(
        heard.values("sender").annotate(last=Max("minute")).values_list("sender", "last").order_by()
    )
    if rule.sender and rule.sender not in last_heard:
        first_token = IngestToken.objects.filter(sender=rule.sender).aggregate(
            at=Min("created_at")
        )["at"]
        last_heard[rule.sender] = first_token - MINUTE if first_token else None
    found = []
    for sender, last_minute in last_heard.items():
        # Counts are per minute: the sender may have sent until the end of its last one.
        quiet_since = last_minute + MINUTE if last_minute else None
        if quiet_since is None or now - quiet_since < quiet_for:
            continue
        found.append(Finding(
            subject=sender, count=1, oldest_at=quiet_since,
            summary=f"{sender} has sent nothing for {_age(now, quiet_since)} — no spans, records or dead letters",
            owner=_sender_owner(sender), link=reverse("dashboard"), details={"sender": sender},
        ))  # fmt: skip
    return found


def _sender_owner(sender: str) -> Owner | None:
    """The owner of the first system the sender's tokens are limited to, if any."""
    systems = IngestToken.objects.filter(sender=sender).values_list("systems", flat=True)
    names = [name for listed in systems for name in listed]
    system = System.objects.filter(name__in=names).select_related("owner").order_by("name").first()
    return system.owner if system else None


# The ledger


def _ledger(rule: AlertRule, now: datetime) -> list[Finding]:
    latest = ledger_verification_latest(now=now)
    if latest is None or latest.ok:
        return []
    return [
        Finding(
            subject="ledger", count=1, oldest_at=latest.at,
            summary=f"Ledger verification failed at {latest.at:%Y-%m-%d %H:%M} UTC: {latest.message}",
        )
    ]  # fmt: skip


FINDERS: dict[str, Callable[[AlertRule, datetime], list[Finding]]] = {
    AlertRule.Kind.FLOW_STALLED: _flows_in(FlowInstance.Status.STALLED),
    AlertRule.Kind.FLOW_FAILED: _flows_in(FlowInstance.Status.FAILED),
    AlertRule.Kind.MISSING: _missing,
    AlertRule.Kind.DRIFT: _drift,
    AlertRule.Kind.DEAD_LETTERS: _dead_letters,
    AlertRule.Kind.SENDER_SILENT: _sender_silent,
    AlertRule.Kind.LEDGER: _ledger,
}
