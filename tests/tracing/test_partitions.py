"""Daily span partitions stay a week ahead, and the stored range follows them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from console.celery import app
from tracing.ingest.partitions import partitions_ensure, stored_range, stored_range_forget

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def forget_the_range_afterwards() -> Iterator[None]:
    yield
    stored_range_forget()  # the partitions made here vanish with the test's transaction


def test_partitions_are_created_a_week_ahead_of_now() -> None:
    later = datetime.now(UTC) + timedelta(days=20)
    created = partitions_ensure(now=later)
    assert f"ingest_span_p{(later + timedelta(days=7)):%Y%m%d}" in created
    assert partitions_ensure(now=later) == []  # running it again changes nothing
    first, last = stored_range() or (None, None)
    assert last == datetime.combine((later + timedelta(days=8)).date(), datetime.min.time(), UTC)
    assert first is not None and first <= datetime.now(UTC) - timedelta(
        days=settings.TIDELINE_SPAN_RETENTION_DAYS - 1
    )


def test_beat_runs_the_partition_task() -> None:
    app.loader.import_default_modules()  # what a worker does at start: autodiscover tasks
    schedule = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "tracing.ingest.tasks.partitions_ensure_task" in schedule
    assert "tracing.ingest.tasks.partitions_ensure_task" in app.tasks
