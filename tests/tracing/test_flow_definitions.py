"""Flow definitions from YAML: the running example imports, round-trips, versions, and a
broken file changes nothing and names each problem by line and field."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from console.access import Role
from console.models import JournalEntry
from tracing.flows.models import BusinessCalendar, FlowDefinition, Owner, System

pytestmark = pytest.mark.django_db
SEAFOOD = Path(__file__).resolve().parents[2] / "tracing" / "flows" / "fixtures" / "seafood.yaml"


def flows(*args: str) -> str:
    out = io.StringIO()
    call_command("flows", *args, stdout=out)
    return out.getvalue()


def test_the_running_example_imports(tmp_path: Path) -> None:
    assert flows("import", str(SEAFOOD)).splitlines() == [
        "Imported order-to-invoice v1.",
        "Imported batch-release v1.",
        "Imported stock-sync v1.",
    ]
    order = FlowDefinition.objects.get(name="order-to-invoice")
    steps = list(order.steps.select_related("system"))
    assert [(step.title, step.system.name) for step in steps] == [
        ("Order created", "ERP"), ("Stock reserved", "WMS"), ("Production notified", "MES"),
        ("Certificate approved", "QMS"), ("Shipment booked", "TMS"), ("Invoice basis sent", "FIN"),
    ]  # fmt: skip
    certificate = steps[3]
    assert (certificate.after, certificate.deadline_seconds, certificate.system.owner.team) == (
        ["production_notified"],
        1800,
        "Quality",
    )
    assert (steps[4].occurs_min, steps[4].occurs_max) == (1, 3)
    invoice_schema = steps[5].payload_schema
    assert invoice_schema is not None and invoice_schema["required"] == [
        "order",
        "amount",
        "currency",
    ]
    assert order.volume == {
        "at_least": 20,
        "at_most": None,
        "per_seconds": 3600,
        "noun": "orders",
        "calendar": "weekdays",
    }
    stock_sync = FlowDefinition.objects.get(name="stock-sync")
    assert (stock_sync.kind, stock_sync.every_seconds, stock_sync.grace_seconds) == (
        "scheduled",
        900,
        300,
    )
    assert System.objects.get(name="QMS").runbook_url.endswith("/qms")
    assert BusinessCalendar.objects.get().working_days == [0, 1, 2, 3, 4]
    assert (
        JournalEntry.objects.filter(action="flow_definition.import", actor="manage.py").count() == 1
    )


def test_an_export_imports_again_unchanged(tmp_path: Path) -> None:
    flows("import", str(SEAFOOD))
    exported = tmp_path / "flows.yaml"
    flows("export", "--out", str(exported))
    assert "every: 15m" in exported.read_text()
    assert flows("import", str(exported)).count("Unchanged:") == 3
    assert FlowDefinition.objects.count() == 3


def test_an_edited_definition_is_a_new_version_and_the_old_one_stays(tmp_path: Path) -> None:
    flows("import", str(SEAFOOD))
    first = FlowDefinition.objects.get(name="order-to-invoice")
    edited = tmp_path / "edited.yaml"
    edited.write_text(SEAFOOD.read_text().replace("deadline: 15m", "deadline: 20m", 1))
    assert "Imported order-to-invoice v2." in flows("import", str(edited))
    first.refresh_from_db()
    assert not first.is_current and first.steps.get(key="stock_reserved").deadline_seconds == 900
    current = FlowDefinition.objects.get(name="order-to-invoice", is_current=True)
    assert current.version == 2 and current.steps.get(key="stock_reserved").deadline_seconds == 1200


def test_a_broken_file_changes_nothing_and_names_every_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = SEAFOOD.read_text()
    text = text.replace("after: [order_created]", "after: [order_creatd]", 1)
    text = text.replace("deadline: 30m", "deadline: half an hour", 1)
    text = text.replace("system: TMS", "system: SHIPPING", 1)
    text = text.replace(
        "schedule: {every: 15m, grace: 5m}", "schedule: {cron: '61 * * * *', grace: 5m}"
    )
    broken.write_text(text)
    with pytest.raises(CommandError) as refused:
        flows("import", str(broken))
    message = str(refused.value)
    lines = {
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if "order_creatd" in line or "half an hour" in line
    }
    assert "nothing was imported" in message
    for line in lines:
        assert f"line {line}, " in message
    assert "flows[0].steps[1].after: 'order_creatd' is not a step of order-to-invoice" in message
    assert "'half an hour' is not a duration" in message
    assert "'SHIPPING' is not a system" in message
    assert "'61 * * * *' is not a cron expression" in message
    assert not FlowDefinition.objects.exists() and not Owner.objects.exists()


def test_a_runbook_must_be_a_web_page(tmp_path: Path) -> None:
    broken = tmp_path / "flows.yaml"
    broken.write_text(
        SEAFOOD.read_text().replace(
            '"https://wiki.seafood.example/runbooks/qms"', '"javascript:alert(1)"'
        )
    )
    with pytest.raises(CommandError) as refused:
        flows("import", str(broken))
    assert "runbook: 'javascript:alert(1)' is not an http(s) URL" in str(refused.value)
    assert not System.objects.exists()


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("owners:\n  - team: Quality\n    email: [unclosed\n")
    with pytest.raises(CommandError, match=r"line \d+, \(file\): not valid YAML"):
        flows("import", str(broken))
    assert not Owner.objects.exists()


def test_the_api_lists_current_definitions_with_owners(client_as) -> None:
    from console.access import Role

    flows("import", str(SEAFOOD))
    listed = client_as(Role.SUPPORT).get("/api/v1/flow-definitions").json()
    assert listed["count"] == 3
    order = next(item for item in listed["results"] if item["name"] == "order-to-invoice")
    certificate = order["steps"][3]
    assert (certificate["title"], certificate["system"], certificate["owner"]) == (
        "Certificate approved",
        "QMS",
        "Quality",
    )
    assert certificate["runbook"] == "https://wiki.seafood.example/runbooks/qms"
    assert order["owner"] == {
        "team": "Sales operations",
        "email": "sales-ops@seafood.example",
        "webhook": "",
    }


def test_an_admin_imports_definitions_in_the_console(client_as: Any) -> None:
    admin = client_as(Role.ADMIN)
    response = admin.post("/settings/flow-definitions/", {"document": SEAFOOD.read_text()})
    assert response.status_code == 302
    page = admin.get("/settings/flow-definitions/").content.decode()
    assert "Imported: order-to-invoice v1, batch-release v1, stock-sync v1." in page
    assert "Certificate approved (QMS)" in page and "every 15 min, grace 5 min" in page
    assert JournalEntry.objects.filter(
        action="flow_definition.import", actor_id__isnull=False
    ).exists()
    exported = admin.get("/settings/flow-definitions/flows.yaml")
    assert exported["Content-Type"] == "application/yaml"
    assert b"name: order-to-invoice" in exported.content


def test_a_broken_upload_in_the_console_changes_nothing_and_names_the_line(client_as: Any) -> None:
    broken = SEAFOOD.read_text().replace("system: QMS", "system: QMX", 1)
    upload = SimpleUploadedFile("flows.yaml", broken.encode(), content_type="application/yaml")
    response = client_as(Role.ADMIN).post("/settings/flow-definitions/", {"file": upload})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was imported" in page
    assert "system: &#x27;QMX&#x27; is not a system; add it under systems" in page
    assert not FlowDefinition.objects.exists()


def test_only_admins_manage_definitions_in_the_console(client_as: Any) -> None:
    for role in (Role.SUPPORT, Role.OPERATOR, Role.AUDITOR):
        client = client_as(role)
        assert client.get("/settings/flow-definitions/").status_code == 403
        assert (
            client.post("/settings/flow-definitions/", {"document": "flows: []"}).status_code == 403
        )
