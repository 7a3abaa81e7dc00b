"""Celery tasks of alerts: thin, each calls one service with the wall clock."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from tracing.alerts.delivery import notification_deliver, notifications_due
from tracing.alerts.evaluation import evaluate


@shared_task(ignore_result=True)
def alerts_evaluate_task() -> int:
    now = timezone.now()
    evaluate(now=now)
    # The sweeper: notifications whose retry is due, or whose worker died while sending.
    due = notifications_due(now=now)
    for notification_id in due:
        notification_deliver_task.delay(notification_id)
    return len(due)


@shared_task(ignore_result=True)
def notification_deliver_task(notification_id: int) -> str:
    outcome = notification_deliver(notification_id=notification_id, now=timezone.now())
    if outcome.retry_in is not None:
        notification_deliver_task.apply_async((notification_id,), countdown=outcome.retry_in)
    return outcome.result
