from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from tracing.ingest.activity import sender_activity_forget
from tracing.ingest.partitions import partitions_ensure_all


@shared_task
def partitions_ensure_task() -> list[str]:
    """Keep daily span and record partitions a week ahead (safe to run any number of times)."""
    return partitions_ensure_all(now=timezone.now())


@shared_task(ignore_result=True)
def sender_activity_forget_task() -> int:
    """Keep the per-sender counters to a week."""
    return sender_activity_forget(now=timezone.now())
