"""`bench ingest --profile`: CPU per span and record, stage by stage, and nothing left behind."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from tracing.ingest.models import AuditRecord, FlowTouch, RecordKey, Span

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_profile_names_each_stage_per_span_and_record_and_cleans_up() -> None:
    out = StringIO()
    call_command("bench", "ingest", "--profile", "--requests", "1", "--rounds", "1", stdout=out)
    report = out.getvalue()
    for section in (
        "OTLP protobuf: CPU µs per span",
        "OTLP json",
        "audit records: CPU µs per record",
    ):
        assert section in report
    for stage in ("decode", "rows", "parse", "store (this process)", "store (PostgreSQL)", "total"):
        assert f"  {stage} " in report
    assert not Span.objects.exists() and not AuditRecord.objects.exists()
    assert not RecordKey.objects.exists() and not FlowTouch.objects.exists()
