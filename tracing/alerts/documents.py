"""Alert rules in the flow definitions file, under `alerts:`, in the words of the rule form:

    alerts:
      - name: Certificates stuck at QMS
        kind: flow_failed
        definition: order-to-invoice
        step: certificate_approved
        channels: [ops-slack]

Each entry goes through the form an admin fills in under Alerts → Rules, inside the import's
transaction and after the file's definitions are saved, so a rule may watch a flow the same
file defines; its problems are named by line and field like the definitions'. A rule is known
by its name: importing it again changes that rule, or leaves it alone when nothing differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import validate_email

from tracing.alerts.channels import webhook_url_problem
from tracing.alerts.forms import AlertRuleForm
from tracing.alerts.models import AlertRule, Channel
from tracing.flows.documents import Checker, Located, duration_text

if TYPE_CHECKING:
    from console.services import Actor

FIELDS = (*AlertRuleForm.Meta.fields, "duration")
SWITCHES = ("to_owner", "is_active")
# What an entry that leaves a field out means: the model's defaults, not an unticked box.
DEFAULTS: dict[str, Any] = {"threshold": 1, "to_owner": True, "is_active": True}
# Written only when they differ from these, so an exported rule reads as it was meant.
_QUIET: dict[str, Any] = {
    "definition": "", "system": "", "step": "", "to_step": "", "sender": "", "duration": None,
    "to_owner": True, "channels": [], "is_active": True,
}  # fmt: skip


@dataclass(frozen=True)
class ImportedRules:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def owner_channels_check(checker: Checker, owner: Located, path: str) -> None:
    """An owner's e-mail and webhook become its alert channels: refuse now what could never
    be delivered, rather than leave the owner unwarned on the night it matters."""
    email = owner.get("email")
    if email:
        try:
            validate_email(str(email))
        except ValidationError:
            checker.problem(owner, "email", path, f"{email!r} is not an e-mail address")
    webhook = owner.get("webhook")
    if webhook and (problem := webhook_url_problem(str(webhook))):
        checker.problem(owner, "webhook", path, problem)


def alert_rules_check(checker: Checker, document: Located) -> None:
    """What can be told before anything is saved: the shape, unknown fields, a name used twice,
    channels that do not exist or may not be posted to."""
    names: set[str] = set()
    for path, entry in checker.items(document, "alerts", ""):
        for key in entry:
            if key not in FIELDS:
                checker.problem(
                    entry, key, path, f"is not a field of an alert rule ({', '.join(FIELDS)})"
                )
        name = checker.text(entry, "name", path)
        if name in names:
            checker.problem(entry, "name", path, f"{name!r} is used by more than one rule")
        names.add(name)
        for key in SWITCHES:
            if not isinstance(entry.get(key, True), bool):
                checker.problem(entry, key, path, "must be true or false")
        _channels_check(checker, entry, path)


def _channels_check(checker: Checker, entry: Located, path: str) -> None:
    named = entry.get("channels", [])
    if not isinstance(named, list) or not all(isinstance(name, str) for name in named):
        checker.problem(entry, "channels", path, "must be a list of channel names")
        return
    known = {channel.name: channel for channel in Channel.objects.filter(name__in=named)}
    for name in named:
        channel = known.get(name)
        if channel is None:
            checker.problem(
                entry, "channels", path, f"there is no channel named {name!r}; make it under "
                "Alerts → Channels",
            )  # fmt: skip
        elif channel.kind == Channel.Kind.WEBHOOK and (problem := webhook_url_problem(channel.url)):
            checker.problem(entry, "channels", path, f"channel {name!r}: {problem}")


def alert_rules_import(*, checker: Checker, document: Located, actor: Actor) -> ImportedRules:
    """Every entry through the rule form, saved and journaled as if an admin had saved it.

    Runs inside the import's transaction; the caller undoes everything when the checker has
    found a problem, so a file whose last rule is wrong leaves no definition behind."""
    # Here, not at the top: the services reach the flows dashboard, which imports the flow
    # services, which import this module.
    from tracing.alerts.services import alert_rule_save, rule_facts, rule_facts_proposed

    imported = ImportedRules()
    for path, entry in checker.items(document, "alerts", ""):
        name = str(entry["name"])
        rule = AlertRule.objects.select_for_update().filter(name=name).first()
        before = rule_facts(rule) if rule is not None else None
        form = AlertRuleForm(data=_form_data(entry), instance=rule)
        if not form.is_valid():
            for key, messages in form.errors.items():
                for message in messages:
                    where = "" if key == NON_FIELD_ERRORS else key
                    checker.problem(entry, where, path, str(message))
        elif before == rule_facts_proposed(form):
            imported.unchanged.append(name)
        else:
            alert_rule_save(form=form, actor=actor)
            (imported.created if before is None else imported.changed).append(name)
    return imported


def _form_data(entry: Located) -> dict[str, Any]:
    data: dict[str, Any] = {**DEFAULTS, **entry}
    if entry.get("duration") is not None:
        data["duration"] = str(entry["duration"])
    data["channels"] = list(
        Channel.objects.filter(name__in=entry.get("channels", [])).values_list("pk", flat=True)
    )
    return data


def alert_rules_document() -> list[dict[str, Any]]:
    """Every rule as an `alerts:` entry: exported and imported again, it changes nothing."""
    return [
        _rule_document(rule)
        for rule in AlertRule.objects.prefetch_related("channels").order_by("name")
    ]


def _rule_document(rule: AlertRule) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": rule.name, "kind": rule.kind, "definition": rule.definition, "system": rule.system,
        "step": rule.step, "to_step": rule.to_step, "sender": rule.sender, "threshold": rule.threshold,
        "duration": duration_text(rule.duration_seconds) if rule.duration_seconds else None,
        "to_owner": rule.to_owner, "channels": sorted(channel.name for channel in rule.channels.all()),
        "is_active": rule.is_active,
    }  # fmt: skip
    return {
        key: value for key, value in values.items() if key not in _QUIET or value != _QUIET[key]
    }
