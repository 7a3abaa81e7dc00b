"""Delivering a notification: at least once, never dropped, the same delivery ID every time.

A worker claims a due notification with a conditional update that also sets a lease; it
sends outside any transaction, then records the attempt. A failure schedules the next try
with exponential backoff and jitter; a worker that dies mid-send leaves a lease that runs
out, and the sweeper (alerts_evaluate_task) queues the notification again.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from tracing.alerts.channels import DeliveryFailed, deliver
from tracing.alerts.models import DeliveryAttempt, Notification

LEASE = timedelta(minutes=2)  # longer than any webhook timeout or SMTP conversation
BACKOFF_CAP_SECONDS = 3600.0
SWEEP_BATCH = 500


@dataclass(frozen=True)
class Outcome:
    result: str  # "delivered", "failed", "not due"
    retry_in: float | None = None  # seconds until the next try, when it failed


def retry_delay(attempts: int) -> float:
    """base · 2^(attempts-1), at most an hour, with "equal jitter": half fixed, half random,
    so channels that failed together do not all retry in the same instant."""
    ceiling = min(
        BACKOFF_CAP_SECONDS, settings.TIDELINE_ALERT_RETRY_BASE_SECONDS * 2 ** (attempts - 1)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret


def notification_deliver(*, notification_id: int, now: datetime) -> Outcome:
    claimed = Notification.objects.filter(
        pk=notification_id, state=Notification.State.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + LEASE)
    if not claimed:
        return Outcome("not due")
    notification = Notification.objects.select_related("channel").get(pk=notification_id)
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    try:
        status_code = deliver(notification)
    except DeliveryFailed as failed:
        error, status_code = str(failed)[:2000], failed.status_code
    took = int((time.monotonic() - started) * 1000)
    return _record(notification, now, status_code, error, took)


def _record(
    notification: Notification, now: datetime, status_code: int | None, error: str, took: int
) -> Outcome:
    attempts = notification.attempts + 1
    at = now + timedelta(milliseconds=took)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            notification=notification, at=at, status_code=status_code, error=error, duration_ms=took,
            outcome=DeliveryAttempt.Outcome.FAILED if error else DeliveryAttempt.Outcome.DELIVERED,
        )  # fmt: skip
        pending = Notification.objects.filter(pk=notification.pk, state=Notification.State.PENDING)
        if not error:
            pending.update(
                state=Notification.State.DELIVERED, delivered_at=at, attempts=F("attempts") + 1
            )
            return Outcome("delivered")
        delay = retry_delay(attempts)
        pending.update(next_attempt_at=at + timedelta(seconds=delay), attempts=F("attempts") + 1)
    return Outcome("failed", retry_in=delay)


def notifications_due(*, now: datetime) -> list[int]:
    """Pending notifications whose next try (or dead worker's lease) has come."""
    due = Notification.objects.filter(state=Notification.State.PENDING, next_attempt_at__lte=now)
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH])
