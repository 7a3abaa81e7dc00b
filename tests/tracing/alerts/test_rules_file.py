"""Alert rules in the flow definitions YAML: imported with the definitions through the rule
form, all or nothing, each problem named by line and field; again by name, never twice;
exported so that the export imports unchanged."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from console.access import Role
from console.models import JournalEntry
from console.services import ingest_token_create
from tracing.alerts.models import AlertRule, Channel
from tracing.flows.models import FlowDefinition, FlowStep, Owner, System

pytestmark = pytest.mark.django_db
ClientAs = Callable[[Role | None], Client]
SEAFOOD = (
    Path(__file__).resolve().parents[3] / "tracing" / "flows" / "fixtures" / "seafood.yaml"
).read_text()
# A flow the file itself adds, and rules that watch it and the running example.
RETURNS = """
  - name: returns
    title: Returns
    owner: Warehouse
    starts_with: return_announced
    steps:
      - key: return_announced
        title: Return announced
        system: ERP
        match: {span: return.announce}
      - key: return_received
        title: Return received
        system: WMS
        after: [return_announced]
        deadline: 1d
        match: {record: {step: return.receive, event: delivered}}
"""
ALERTS = """
alerts:
  - name: Certificates stuck at QMS
    kind: flow_failed
    definition: order-to-invoice
    step: certificate_approved
    channels: [ops-slack]
  - name: Returns drifting
    kind: drift
    definition: returns
    step: return_announced
    to_step: return_received
    threshold: 5
    duration: 2h
    to_owner: false
    channels: [ops-mail, ops-slack]
  - name: QMS dead letters piling up
    kind: dead_letters
    system: QMS
    threshold: 3
    is_active: false
"""
FILE = SEAFOOD + RETURNS + ALERTS


@pytest.fixture(autouse=True)
def channels(settings: Any) -> None:
    """Channels are made in the console (a webhook's secret is shown there once); the file
    names them."""
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = ["hooks.slack.com"]
    Channel.objects.create(name="ops-slack", kind="webhook", url="https://hooks.slack.com/T/B/x")
    Channel.objects.create(name="ops-mail", kind="email", email="ops@seafood.example")


def flows_import(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "flows.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("flows", "import", str(path), stdout=out)
    return out.getvalue().splitlines()


def flows_export() -> str:
    out = io.StringIO()
    call_command("flows", "export", stdout=out)
    return out.getvalue()


def line_of(text: str, words: str) -> int:
    """The line where `words` (which may run over several lines) first begin."""
    return text[: text.index(words)].count("\n") + 1


def saved_rows() -> dict[str, int]:
    return {
        "definitions": FlowDefinition.objects.count(), "steps": FlowStep.objects.count(),
        "owners": Owner.objects.count(), "systems": System.objects.count(),
        "rules": AlertRule.objects.count(), "journal": JournalEntry.objects.count(),
    }  # fmt: skip


def rules_as_saved() -> list[tuple[Any, ...]]:
    return [
        (rule.name, rule.kind, rule.definition, rule.system, rule.step, rule.to_step,
         rule.threshold, rule.duration_seconds, rule.to_owner, rule.is_active,
         sorted(channel.name for channel in rule.channels.all()))
        for rule in AlertRule.objects.order_by("name")
    ]  # fmt: skip


def test_definitions_and_the_rules_that_watch_them_import_from_one_file(tmp_path: Path) -> None:
    printed = flows_import(tmp_path, FILE)
    assert "Imported returns v1." in printed
    assert printed[-3:] == [
        "Created alert rule Certificates stuck at QMS.",
        "Created alert rule Returns drifting.",
        "Created alert rule QMS dead letters piling up.",
    ]
    assert rules_as_saved() == [
        ("Certificates stuck at QMS", "flow_failed", "order-to-invoice", "", "certificate_approved",
         "", 1, None, True, True, ["ops-slack"]),
        ("QMS dead letters piling up", "dead_letters", "", "QMS", "", "", 3, None, True, False, []),
        ("Returns drifting", "drift", "returns", "", "return_announced", "return_received", 5,
         7200, False, True, ["ops-mail", "ops-slack"]),
    ]  # fmt: skip


def test_every_imported_rule_is_journaled_as_the_command_did_it(tmp_path: Path) -> None:
    flows_import(tmp_path, FILE)
    entries = JournalEntry.objects.filter(action="alert_rule.create").order_by("id")
    assert [(entry.actor, entry.details["name"]) for entry in entries] == [
        ("manage.py", "Certificates stuck at QMS"),
        ("manage.py", "Returns drifting"),
        ("manage.py", "QMS dead letters piling up"),
    ]
    drifting = entries[1]
    assert drifting.subject == f"alert_rule:{AlertRule.objects.get(name='Returns drifting').pk}"
    assert drifting.details["duration_seconds"] == 7200 and drifting.details["to_owner"] is False


BROKEN = [
    # (what the file says instead, the words that mark the line, the field, the message)
    (("step: certificate_approved\n    channels", "step: certificate_signed\n    channels"),
     "certificate_signed", "alerts[0].step", "'certificate_signed' is not a step of order-to-invoice."),
    (("system: QMS\n    threshold: 3", "system: SAP\n    threshold: 3"),
     "system: SAP", "alerts[2].system", "There is no system named 'SAP'."),
    (("definition: returns", "definition: refunds"),
     "definition: refunds", "alerts[1].definition", "There is no flow definition named 'refunds'."),
    (("duration: 2h", "duration: two hours"),
     "two hours", "alerts[1].duration", "'two hours' is not a duration such as 90s, 15m, 2h or 1d."),
    (("    duration: 2h\n", ""),
     "name: Returns drifting", "alerts[1].duration", "This kind of rule needs it."),
    (("channels: [ops-slack]", "channels: [ops-pager]"),
     "ops-pager", "alerts[0].channels", "there is no channel named 'ops-pager'"),
    (("kind: flow_failed", "kind: flow_late"),
     "flow_late", "alerts[0].kind", "Select a valid choice. flow_late is not one of the available choices."),
    (("threshold: 5", "treshold: 5"),
     "treshold", "alerts[1].treshold", "is not a field of an alert rule"),
    (("name: QMS dead letters piling up", "name: Returns drifting"),
     "- name: Returns drifting\n    kind: dead", "alerts[2].name", "'Returns drifting' is used by more than one rule"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "marker", "field", "message"), BROKEN)
def test_a_broken_rule_imports_nothing_at_all_and_names_its_line_and_field(
    tmp_path: Path, change: tuple[str, str], marker: str, field: str, message: str
) -> None:
    flows_import(tmp_path, SEAFOOD)
    # The definitions change too (a new version would be made), so nothing-saved is visible.
    text = FILE.replace("deadline: 15m", "deadline: 20m", 1).replace(*change)
    before = saved_rows()
    with pytest.raises(CommandError) as refused:
        flows_import(tmp_path, text)
    assert f"nothing was imported.\nline {line_of(text, marker)}, {field}: {message}" in str(
        refused.value
    )
    assert saved_rows() == before
    assert not FlowDefinition.objects.filter(name="returns").exists()
    assert FlowDefinition.objects.get(name="order-to-invoice", is_current=True).version == 1


def test_a_webhook_whose_host_is_not_allowed_is_refused(tmp_path: Path, settings: Any) -> None:
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = []  # slack has since left the allow-list
    owner_webhook = SEAFOOD.replace(
        "    email: quality@seafood.example\n",
        "    email: quality@seafood.example\n    webhook: https://qms-pager.example/hook\n",
    )
    text = owner_webhook + RETURNS + ALERTS
    with pytest.raises(CommandError) as refused:
        flows_import(tmp_path, text)
    message = str(refused.value)
    assert (
        f"line {line_of(text, 'qms-pager')}, owners[3].webhook: qms-pager.example is not on the "
        "webhook allow-list"
    ) in message
    assert (
        f"line {line_of(text, 'channels: [ops-slack]')}, alerts[0].channels: channel 'ops-slack': "
        "hooks.slack.com is not on the webhook allow-list"
    ) in message
    assert saved_rows() == {key: 0 for key in saved_rows()}


def test_importing_the_same_file_again_changes_nothing(tmp_path: Path) -> None:
    flows_import(tmp_path, FILE)
    saved, journal = rules_as_saved(), JournalEntry.objects.filter(action__startswith="alert_rule")
    assert journal.count() == 3
    again = flows_import(tmp_path, FILE)
    assert again[-3:] == [
        "Unchanged: alert rule Certificates stuck at QMS.",
        "Unchanged: alert rule Returns drifting.",
        "Unchanged: alert rule QMS dead letters piling up.",
    ]
    assert rules_as_saved() == saved and journal.count() == 3


def test_a_changed_rule_is_changed_by_name_not_added(tmp_path: Path) -> None:
    flows_import(tmp_path, FILE)
    rule = AlertRule.objects.get(name="Returns drifting")
    printed = flows_import(tmp_path, FILE.replace("duration: 2h", "duration: 90m"))
    assert "Changed alert rule Returns drifting." in printed
    rule.refresh_from_db()
    assert AlertRule.objects.count() == 3 and rule.duration_seconds == 5400
    change = JournalEntry.objects.get(action="alert_rule.change")
    assert change.subject == f"alert_rule:{rule.pk}" and change.details["duration_seconds"] == 5400


def test_an_export_imports_again_as_the_same_rules(tmp_path: Path) -> None:
    ingest_token_create(sender="stock-exporter", systems=[], actor="test")
    flows_import(tmp_path, FILE + SILENT)
    exported = flows_export()
    assert "alerts:\n- name: Certificates stuck at QMS\n" in exported
    assert "duration: 2h" in exported and "duration: 45m" in exported
    saved = rules_as_saved()
    AlertRule.objects.all().delete()
    flows_import(tmp_path, exported)
    assert rules_as_saved() == saved
    assert flows_export() == exported
    assert flows_import(tmp_path, exported)[-4:] == [
        f"Unchanged: alert rule {name}." for name, *_ in saved
    ]


SILENT = """
  - name: Stock exporter silent
    kind: sender_silent
    sender: stock-exporter
    duration: 45m
"""


def test_an_admin_uploads_rules_with_the_definitions(client_as: ClientAs) -> None:
    admin = client_as(Role.ADMIN)
    upload = SimpleUploadedFile("flows.yaml", FILE.encode(), content_type="application/yaml")
    assert admin.post("/settings/flow-definitions/", {"file": upload}).status_code == 302
    page = admin.get("/settings/flow-definitions/").content.decode()
    assert "Alert rules: 3 created, 0 changed, 0 unchanged." in page
    assert {entry.actor for entry in JournalEntry.objects.filter(action="alert_rule.create")} == {
        "dana"
    }
    downloaded = admin.get("/settings/flow-definitions/flows.yaml").content.decode()
    assert "- name: Returns drifting\n  kind: drift\n" in downloaded


def test_an_admin_sees_why_an_upload_was_refused_and_nothing_is_saved(
    client_as: ClientAs,
) -> None:
    broken = FILE.replace("duration: 2h", "duration: soon")
    upload = SimpleUploadedFile("flows.yaml", broken.encode(), content_type="application/yaml")
    admin = client_as(Role.ADMIN)
    before = saved_rows()
    response = admin.post("/settings/flow-definitions/", {"file": upload})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported" in page
    assert (
        f"line {line_of(broken, 'duration: soon')}, alerts[1].duration: &#x27;soon&#x27; is not "
        "a duration such as 90s, 15m, 2h or 1d."
    ) in page
    assert saved_rows() == before


def test_only_admins_import_rules(client_as: ClientAs) -> None:
    for role in (Role.SUPPORT, Role.OPERATOR, Role.AUDITOR):
        response = client_as(role).post("/settings/flow-definitions/", {"document": FILE})
        assert response.status_code == 403
    assert not AlertRule.objects.exists() and not FlowDefinition.objects.exists()
