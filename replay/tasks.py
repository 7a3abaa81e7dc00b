"""Celery tasks of replay: they carry only an attempt's ID; the row says what to do."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from replay.autoreplay import auto_replay_poll
from replay.bulk import bulk_replay_step, bulk_replays_sweep
from replay.sending import replay_send_group
from replay.services import replay_send, replays_sweep


@shared_task(ignore_result=True, acks_late=True)
def replay_send_task(attempt_id: str) -> str:
    return replay_send(attempt_id=attempt_id, now=timezone.now())


@shared_task(ignore_result=True, acks_late=True)
def replay_send_group_task(attempt_ids: list[str]) -> list[str]:
    return replay_send_group(attempt_ids=attempt_ids, now=timezone.now())


@shared_task(ignore_result=True)
def replays_sweep_task() -> dict[str, int]:
    return replays_sweep(now=timezone.now())


@shared_task(ignore_result=True, acks_late=True)
def bulk_replay_step_task(job_id: str) -> str:
    return bulk_replay_step(job_id=job_id, now=timezone.now())


@shared_task(ignore_result=True)
def bulk_replays_sweep_task() -> int:
    return bulk_replays_sweep(now=timezone.now())


@shared_task(ignore_result=True)
def auto_replay_poll_task() -> dict[str, str]:
    return auto_replay_poll(now=timezone.now())
