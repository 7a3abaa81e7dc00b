"""Retention prunes old payloads per system and drops old span partitions; the ledger, its
proofs and a bundle exported before the pruning all still verify; each run is journaled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

from console.models import JournalEntry
from tests.tracing.ledger.exportkit import seafood_day, verify_alone
from tests.tracing.seafood import Runtime
from tracing.ingest.models import AuditRecord, DeadLetter, RawBody
from tracing.ingest.partitions import SPAN_TABLE, partition_days, partitions_ensure
from tracing.ledger.retention import retention_run
from tracing.ledger.retention_policy import retention_policy_parse
from tracing.ledger.services import ledger_checkpoint, ledger_sequence, ledger_verify

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)
OLD = (NOW - timedelta(days=5)).replace(hour=6, minute=0, second=0, microsecond=0)
RECENT = (NOW - timedelta(hours=6)).replace(minute=0, second=0, microsecond=0)


def test_old_payloads_go_and_every_proof_and_an_earlier_bundle_still_verify(
    signing_key: Any, settings: Any, tmp_path: Path
) -> None:
    runtime = Runtime.connected()
    seafood_day(runtime, OLD, range(0, 5))
    runtime.record(
        "WMS", "stock_export", "delivered", OLD, correlation=None, payload='{"stock": 12}'
    )
    runtime.send()  # a batch of WMS alone: its raw body goes with its payloads
    seafood_day(runtime, RECENT, range(5, 8))
    before = tmp_path / "before.zip"
    call_command("ledger", "export", "--out", str(before))
    settings.TIDELINE_PAYLOAD_RETENTION = retention_policy_parse("default=2d,QMS=3650d")

    pruned = retention_run(now=timezone.now())

    old_records = AuditRecord.objects.filter(occurred_at__lt=NOW - timedelta(days=2))
    assert not old_records.exclude(system="QMS").filter(payload__isnull=False).exists()
    assert old_records.filter(system="ERP").exists()
    assert AuditRecord.objects.filter(
        occurred_at__gte=RECENT, system="ERP", payload__isnull=False
    ).exists()
    assert all(bytes(letter.payload) for letter in DeadLetter.objects.filter(system="QMS"))
    assert pruned["records"] == 6  # the five old orders' ERP payloads and the stock export
    assert pruned["raw_bodies"] == 1 and RawBody.objects.count() > 0
    journaled = JournalEntry.objects.get(action="retention.run")
    assert journaled.details["records"] == pruned["records"] and journaled.actor == "tideline"

    ledger_sequence(now=timezone.now())  # the journal entry of the run itself
    ledger_checkpoint(now=timezone.now())
    assert ledger_verify(now=timezone.now(), full=True).ok
    earlier = verify_alone(before, "--key", signing_key.fingerprint)
    assert earlier.returncode == 0, earlier.stdout
    after = tmp_path / "after.zip"
    call_command("ledger", "export", "--out", str(after))
    assert verify_alone(after, "--key", signing_key.fingerprint).returncode == 0


def test_a_dead_letter_still_waiting_for_a_decision_keeps_its_payload(settings: Any) -> None:
    runtime = Runtime.connected()
    for order in ("4711", "4712"):
        runtime.dead_letter("WMS", OLD, correlation=f"ORD-{order}", payload=f'{{"order": {order}}}')
    DeadLetter.objects.filter(correlation_id="ORD-4712").update(state=DeadLetter.State.RESOLVED)
    settings.TIDELINE_PAYLOAD_RETENTION = retention_policy_parse("default=2d")

    pruned = retention_run(now=timezone.now())

    waiting = DeadLetter.objects.get(correlation_id="ORD-4711")
    assert bytes(waiting.payload) == b'{"order": 4711}'
    assert bytes(DeadLetter.objects.get(correlation_id="ORD-4712").payload) == b""
    assert pruned["dead_letters"] == 1


def test_span_partitions_past_their_retention_are_dropped(settings: Any) -> None:
    settings.TIDELINE_SPAN_RETENTION_DAYS = 40
    partitions_ensure(now=NOW)
    settings.TIDELINE_SPAN_RETENTION_DAYS = 30

    retention_run(now=NOW)

    days = partition_days(SPAN_TABLE)
    assert min(days) == NOW.date() - timedelta(days=30)
    dropped = JournalEntry.objects.get(action="retention.run").details["span_partitions_dropped"]
    assert len(dropped) == 10


@pytest.mark.parametrize(
    "text", ["QMS=10d", "default=90", "default=90d,default=1d", "default=0d", "WMS=3w,default=1d"]
)
def test_a_retention_setting_that_does_not_parse_stops_the_start(text: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="TIDELINE_PAYLOAD_RETENTION"):
        retention_policy_parse(text)
