"""Changes to flow definitions, owners, systems and calendars."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from django.db import transaction

from console.services import journal_append
from tracing.alerts.documents import (
    ImportedRules,
    alert_rules_check,
    alert_rules_document,
    alert_rules_import,
    owner_channels_check,
)
from tracing.flows.documents import (
    SLUG,
    Checker,
    DefinitionsInvalid,
    Located,
    check_cron,
    check_match,
    check_payload_schema,
    check_timezone,
    document_load,
    duration_text,
    occurrences,
    parse_calendar_days,
    parse_holidays,
    parse_hours,
    plain,
)
from tracing.flows.models import BusinessCalendar, FlowDefinition, FlowStep, Owner, System

if TYPE_CHECKING:
    from console.services import Actor


@dataclass(frozen=True)
class ImportedDefinitions:
    created: list[str]  # "order-to-invoice v2"
    unchanged: list[str]
    rules: ImportedRules = field(default_factory=ImportedRules)


def flow_definitions_import(*, text: str, actor: Actor) -> ImportedDefinitions:
    """Import a whole file or nothing: every problem is reported, with its line and field."""
    document = document_load(text)
    checker = Checker()
    owners = _owners_check(checker, document)
    systems = _systems_check(checker, document, owners)
    calendars = _calendars_check(checker, document)
    flows = _flows_check(checker, document, owners, systems, calendars)
    alert_rules_check(checker, document)
    if checker.problems:
        raise DefinitionsInvalid(checker.problems)
    with transaction.atomic():
        _owners_save(document)
        _systems_save(document)
        _calendars_save(checker, document)
        result = _flows_save(flows, actor)
        journal_append(
            actor=actor, action="flow_definition.import", subject="flow_definitions",
            details={"created": result.created, "unchanged": result.unchanged},
        )  # fmt: skip
        # The rules last: they may watch a flow this file defines, and the rule form checks
        # what is saved. A rule refused undoes the whole file.
        rules = alert_rules_import(checker=checker, document=document, actor=actor)
        if checker.problems:
            raise DefinitionsInvalid(checker.problems)
    return ImportedDefinitions(created=result.created, unchanged=result.unchanged, rules=rules)


def _owners_check(checker: Checker, document: Located) -> set[str]:
    known = set(Owner.objects.values_list("team", flat=True))
    for path, owner in checker.items(document, "owners", ""):
        known.add(checker.text(owner, "team", path))
        owner_channels_check(checker, owner, path)
    return known


def _systems_check(checker: Checker, document: Located, owners: set[str]) -> set[str]:
    known = set(System.objects.values_list("name", flat=True))
    for path, system in checker.items(document, "systems", ""):
        known.add(checker.text(system, "name", path))
        _runbook_check(checker, system, path)
        owner = checker.text(system, "owner", path)
        if owner and owner not in owners:
            checker.problem(
                system, "owner", path, f"{owner!r} is not an owner; add it under owners"
            )
    return known


def _runbook_check(checker: Checker, where: Located, path: str) -> None:
    """A runbook is a web page: anything else would be a link support must not follow."""
    runbook = str(where.get("runbook", ""))
    if runbook and not runbook.startswith(("https://", "http://")):
        checker.problem(where, "runbook", path, f"{runbook!r} is not an http(s) URL")


def _calendars_check(checker: Checker, document: Located) -> set[str]:
    known = set(BusinessCalendar.objects.values_list("name", flat=True))
    for path, calendar in checker.items(document, "calendars", ""):
        known.add(checker.text(calendar, "name", path))
        check_timezone(checker, calendar, path)
        parse_calendar_days(checker, calendar, path)
        parse_hours(checker, calendar, path)
        parse_holidays(checker, calendar, path)
    return known


def _flows_check(
    checker: Checker, document: Located, owners: set[str], systems: set[str], calendars: set[str]
) -> list[dict[str, Any]]:
    flows: list[dict[str, Any]] = []
    for path, flow in checker.items(document, "flows", ""):
        name = checker.text(flow, "name", path, pattern=SLUG)
        owner = checker.text(flow, "owner", path)
        if owner and owner not in owners:
            checker.problem(flow, "owner", path, f"{owner!r} is not an owner; add it under owners")
        _runbook_check(checker, flow, path)
        steps = _steps_check(checker, flow, path, name, systems)
        starts_with = checker.text(flow, "starts_with", path)
        if starts_with and starts_with not in {step["key"] for step in steps}:
            checker.problem(flow, "starts_with", path, f"{starts_with!r} is not a step of {name}")
        schedule = _schedule_check(checker, flow, path)
        volume = _volume_check(checker, flow, path, calendars)
        flows.append({
            "name": name, "title": checker.text(flow, "title", path), "owner": owner,
            "runbook_url": str(flow.get("runbook", "")), "starts_with": starts_with, "steps": steps,
            **schedule, "volume": volume,
        })  # fmt: skip
    return flows


def _steps_check(
    checker: Checker, flow: Located, path: str, name: str, systems: set[str]
) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for step_path, step in checker.items(flow, "steps", path):
        system = checker.text(step, "system", step_path)
        if system and system not in systems:
            checker.problem(
                step, "system", step_path, f"{system!r} is not a system; add it under systems"
            )
        occurs_min, occurs_max = occurrences(checker, step, step_path)
        deadline_from = str(step.get("deadline_from", "after"))
        if deadline_from not in FlowStep.DeadlineFrom.values:
            checker.problem(step, "deadline_from", step_path, "must be after or start")
        steps.append({
            "key": checker.text(step, "key", step_path, pattern=SLUG), "title": checker.text(step, "title", step_path),
            "system": system, "match": check_match(checker, step, step_path),
            "after": [str(key) for key in step.get("after", [])], "occurs_min": occurs_min, "occurs_max": occurs_max,
            "deadline_seconds": checker.duration(step, "deadline", step_path), "deadline_from": deadline_from,
            "optional": bool(step.get("optional", False)),
            "payload_schema": check_payload_schema(checker, step, step_path), "_where": (step, step_path),
        })  # fmt: skip
    keys = [checked["key"] for checked in steps]
    for checked in steps:
        where, step_path = checked.pop("_where")
        if keys.count(checked["key"]) > 1:
            checker.problem(
                where,
                "key",
                step_path,
                f"{checked['key']!r} is used by more than one step of {name}",
            )
        for before in checked["after"]:
            if before not in keys:
                checker.problem(where, "after", step_path, f"{before!r} is not a step of {name}")
    return steps


def _schedule_check(checker: Checker, flow: Located, path: str) -> dict[str, Any]:
    schedule = flow.get("schedule")
    if schedule is None:
        return {
            "kind": FlowDefinition.Kind.INSTANCE,
            "every_seconds": None,
            "cron": "",
            "grace_seconds": 0,
        }
    if not isinstance(schedule, Located):
        checker.problem(flow, "schedule", path, "must be a mapping such as {every: 15m, grace: 5m}")
        return {}
    every = checker.duration(schedule, "every", f"{path}.schedule")
    cron = check_cron(checker, schedule, "cron", f"{path}.schedule")
    if not every and not cron:
        checker.problem(
            flow, "schedule", path, "needs every (e.g. 15m) or cron (e.g. */15 * * * *)"
        )
    grace = checker.duration(schedule, "grace", f"{path}.schedule") or 0
    return {
        "kind": FlowDefinition.Kind.SCHEDULED,
        "every_seconds": every,
        "cron": cron,
        "grace_seconds": grace,
    }


def _volume_check(
    checker: Checker, flow: Located, path: str, calendars: set[str]
) -> dict[str, Any] | None:
    volume = flow.get("volume")
    if volume is None:
        return None
    if not isinstance(volume, Located) or not ({"at_least", "at_most"} & set(volume)):
        checker.problem(
            flow,
            "volume",
            path,
            "needs at_least or at_most, per (a window) and optionally a calendar",
        )
        return None
    per = checker.duration(volume, "per", f"{path}.volume")
    if per is None:
        checker.problem(volume, "per", f"{path}.volume", "is missing: the window, e.g. 1h")
    calendar = volume.get("calendar")
    if calendar is not None and calendar not in calendars:
        checker.problem(
            volume,
            "calendar",
            f"{path}.volume",
            f"{calendar!r} is not a calendar; add it under calendars",
        )
    return {
        "at_least": volume.get("at_least"),
        "at_most": volume.get("at_most"),
        "per_seconds": per,
        "calendar": calendar,
        # What the sentence calls the instances: "ERP sent 0 orders between 09:00 and 10:00".
        "noun": str(volume["noun"]) if volume.get("noun") else None,
    }


def _owners_save(document: Located) -> None:
    for owner in document.get("owners", []):
        Owner.objects.update_or_create(
            team=owner["team"],
            defaults={"email": owner.get("email", ""), "webhook_url": owner.get("webhook", "")},
        )


def _systems_save(document: Located) -> None:
    for system in document.get("systems", []):
        System.objects.update_or_create(
            name=system["name"],
            defaults={
                "owner": Owner.objects.get(team=system["owner"]),
                "runbook_url": system.get("runbook", ""),
            },
        )


def _calendars_save(checker: Checker, document: Located) -> None:
    for calendar in document.get("calendars", []):
        opens, closes = parse_hours(checker, calendar, "")
        BusinessCalendar.objects.update_or_create(
            name=calendar["name"],
            defaults={
                "timezone": calendar.get("timezone", "UTC"), "working_days": parse_calendar_days(checker, calendar, ""),
                "opens": opens, "closes": closes, "holidays": parse_holidays(checker, calendar, ""),
            },
        )  # fmt: skip


def _flows_save(flows: list[dict[str, Any]], actor: Actor) -> ImportedDefinitions:
    created, unchanged = [], []
    for flow in flows:
        source = plain(flow)
        current = (
            FlowDefinition.objects.select_for_update()
            .filter(name=flow["name"], is_current=True)
            .first()
        )
        if current is not None and current.source == source:
            unchanged.append(str(current))
            continue
        version = current.version + 1 if current else 1
        if current is not None:
            current.is_current = False
            current.save(update_fields=["is_current"])
        definition = FlowDefinition.objects.create(
            name=flow["name"], version=version, title=flow["title"], kind=flow["kind"],
            owner=Owner.objects.get(team=flow["owner"]), runbook_url=flow["runbook_url"],
            starts_with=flow["starts_with"], every_seconds=flow["every_seconds"], cron=flow["cron"],
            grace_seconds=flow["grace_seconds"], volume=flow["volume"], source=source,
            created_by=actor if isinstance(actor, str) else getattr(actor, "username", ""),
        )  # fmt: skip
        for position, step in enumerate(flow["steps"]):
            FlowStep.objects.create(
                definition=definition, position=position, system=System.objects.get(name=step["system"]),
                **{key: value for key, value in step.items() if key != "system"},
            )  # fmt: skip
        created.append(str(definition))
    return ImportedDefinitions(created=created, unchanged=unchanged)


def flow_definitions_export() -> str:
    """The current definitions, their owners, systems, calendars and alert rules, as an
    importable file."""
    document: dict[str, Any] = {
        "owners": [
            {"team": owner.team, "email": owner.email, "webhook": owner.webhook_url}
            for owner in Owner.objects.order_by("team")
        ],
        "systems": [
            {"name": system.name, "owner": system.owner.team, "runbook": system.runbook_url}
            for system in System.objects.select_related("owner").order_by("name")
        ],
        "calendars": [
            _calendar_document(calendar) for calendar in BusinessCalendar.objects.order_by("name")
        ],
        "flows": [
            _flow_document(definition)
            for definition in FlowDefinition.objects.filter(is_current=True).order_by("name")
        ],
        "alerts": alert_rules_document(),
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _calendar_document(calendar: BusinessCalendar) -> dict[str, Any]:
    from tracing.flows.documents import DAYS

    closes = "24:00" if calendar.closes.second == 59 else f"{calendar.closes:%H:%M}"
    return {
        "name": calendar.name, "timezone": calendar.timezone, "days": [DAYS[day] for day in calendar.working_days],
        "hours": f"{calendar.opens:%H:%M}-{closes}", "holidays": list(calendar.holidays),
    }  # fmt: skip


def _flow_document(definition: FlowDefinition) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": definition.name, "title": definition.title, "owner": definition.owner.team,
        "runbook": definition.runbook_url, "starts_with": definition.starts_with,
    }  # fmt: skip
    if definition.kind == FlowDefinition.Kind.SCHEDULED:
        schedule = (
            {"every": duration_text(definition.every_seconds)}
            if definition.every_seconds
            else {"cron": definition.cron}
        )
        document["schedule"] = {**schedule, "grace": duration_text(definition.grace_seconds)}
    if definition.volume:
        volume = definition.volume
        document["volume"] = {key: value for key, value in (
            ("at_least", volume["at_least"]), ("at_most", volume["at_most"]),
            ("per", duration_text(volume["per_seconds"])), ("calendar", volume["calendar"]),
            ("noun", volume.get("noun")),
        ) if value is not None}  # fmt: skip
    document["steps"] = [_step_document(step) for step in definition.steps.select_related("system")]
    return document


def _step_document(step: FlowStep) -> dict[str, Any]:
    occurs = "*" if step.occurs_max is None and step.occurs_min == 0 else (
        f"{step.occurs_min}..*" if step.occurs_max is None else
        str(step.occurs_min) if step.occurs_min == step.occurs_max else f"{step.occurs_min}..{step.occurs_max}"
    )  # fmt: skip
    document: dict[str, Any] = {
        "key": step.key,
        "title": step.title,
        "system": step.system.name,
        "match": step.match,
    }
    for key, value, default in (
        ("after", step.after, []), ("occurs", occurs, "1"),
        ("deadline", duration_text(step.deadline_seconds) if step.deadline_seconds else None, None),
        ("deadline_from", step.deadline_from, "after"), ("optional", step.optional, False),
        ("payload_schema", step.payload_schema, None),
    ):  # fmt: skip
        if value != default:
            document[key] = value
    return document
