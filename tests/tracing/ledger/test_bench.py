"""`bench ledger`'s own parts: it refuses a database not meant for it, and the records it
generates in SQL are queued, sequenced and verified like any ingested record."""

from __future__ import annotations

import json

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from tracing.ledger import bench
from tracing.ledger.models import Entry, PendingEntry
from tracing.ledger.services import ledger_checkpoint, ledger_sequence, ledger_verify

pytestmark = pytest.mark.django_db


def test_it_refuses_a_database_whose_name_does_not_say_bench() -> None:
    with pytest.raises(CommandError, match="contains 'bench', or pass --yes-wipe"):
        bench.database_check(yes_wipe=False)
    bench.database_check(yes_wipe=True)


def test_generated_records_are_logged_like_ingested_ones() -> None:
    bench.records_queue(12, now=timezone.now())
    assert PendingEntry.objects.filter(kind="record").count() == 12
    assert ledger_sequence(now=timezone.now()).entries == 12
    ledger_checkpoint(now=timezone.now())
    records = [json.loads(bytes(e.body)) for e in Entry.objects.filter(kind="record")]
    assert len(records) == 12 and {r["actor"] for r in records} == {bench.SENDER}
    assert sum("error" in r["digests"] for r in records) == 1  # every 50th fails, from 0
    assert ledger_verify(now=timezone.now(), full=True).ok


def test_the_sequencers_records_come_after_every_logged_time_so_a_range_holds_them_alone() -> None:
    bench.records_queue(12, now=timezone.now())
    ledger_sequence(now=timezone.now())
    before = bench.latest_time()
    bench.records_queue(5, now=timezone.now(), after=before)
    ledger_sequence(now=timezone.now())
    assert Entry.objects.filter(at__gt=before).count() == 5
    assert Entry.objects.filter(index__gte=12, at__lte=before).count() == 0
