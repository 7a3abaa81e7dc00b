"""Celery tasks of the flow summary: thin, each calls one service with the wall clock."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from tracing.flows.services.missing import flows_missing_check
from tracing.flows.services.summary import flows_mark_stalled, flows_summarize


@shared_task(ignore_result=True)
def flows_summarize_task() -> int:
    return flows_summarize(now=timezone.now())


@shared_task(ignore_result=True)
def flows_stalled_task() -> int:
    return flows_mark_stalled(now=timezone.now())


@shared_task(ignore_result=True)
def flows_missing_task() -> int:
    return flows_missing_check(now=timezone.now())
