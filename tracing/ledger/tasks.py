"""Celery tasks of the ledger: thin, each calls one service and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from tracing.ledger import services


@shared_task
def ledger_sequence_task() -> int:
    return services.ledger_sequence(now=timezone.now()).entries


@shared_task
def ledger_checkpoint_task() -> int | None:
    checkpoint = services.ledger_checkpoint(now=timezone.now())
    services.witness_publish(now=timezone.now())
    return checkpoint.size if checkpoint else None


@shared_task
def ledger_verify_task() -> bool:
    return bool(services.ledger_verify(now=timezone.now()).ok)
