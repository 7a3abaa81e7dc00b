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


@shared_task
def ledger_export_task(job_id: int) -> str | None:
    from tracing.ledger.export import ledger_export_run

    job = ledger_export_run(job_id=job_id, now=timezone.now())
    return job.state if job else None


@shared_task
def ledger_exports_sweep_task() -> int:
    from tracing.ledger.export import ledger_exports_stale

    stale = ledger_exports_stale(now=timezone.now())
    for job_id in stale:
        ledger_export_task.delay(job_id)
    return len(stale)


@shared_task
def retention_run_task() -> dict[str, int]:
    from tracing.ledger.retention import retention_run

    return retention_run(now=timezone.now())
