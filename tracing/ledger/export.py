"""Export bundles: asking for one (the range is fixed then), writing it in a worker, sweeping.

The bundle always holds a contiguous range of the log — every entry between the first and
the last that fall in the asked time range — so nothing can be left out unseen; the system
and correlation ID filters only choose what its summary highlights. The range ends at the
latest signed checkpoint: entries not yet signed cannot be proven and are left for the next.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from console.access import Capability, user_may
from console.services import journal_append
from tracing.ledger import selectors
from tracing.ledger.canonical import rfc3339
from tracing.ledger.export_bundle import bundle_write
from tracing.ledger.models import Checkpoint, ExportJob
from tracing.ledger.note import (
    CheckpointBody,
    NoteError,
    checkpoint_body_parse,
    note_verify,
    verifier_key_parse,
)
from tracing.ledger.signing import signing_key

logger = logging.getLogger(__name__)

PRIOR_MAX_BYTES = 10_000
STALE_AFTER = timedelta(minutes=5)


class ExportRefused(ValueError):
    """An export that cannot be made as asked; the message tells the auditor why."""


class ExportForbidden(PermissionError):
    """Only auditors and admins export the ledger."""


@dataclass(frozen=True)
class ExportFilters:
    since: datetime | None = None
    until: datetime | None = None
    system: str = ""
    correlation_id: str = ""
    prior_checkpoint: str = ""


def ledger_export_request(
    *, user: User | None, actor: str = "", filters: ExportFilters, now: datetime
) -> ExportJob:
    """Fix the range and queue the job; `user` None is the command line, named by `actor`.

    ExportForbidden for a user without the audit capability, ExportRefused naming what is
    wrong with the filters or the prior checkpoint. The worker is woken after commit.
    """
    if user is not None and not user_may(user, Capability.AUDIT):
        raise ExportForbidden("Only auditors and admins may export the ledger.")
    if filters.since and filters.until and filters.since >= filters.until:
        raise ExportRefused("The start of the time range must be before its end.")
    latest = selectors.checkpoint_latest()
    if latest is None:
        raise ExportRefused("No checkpoint has been signed yet: there is nothing to prove.")
    if filters.prior_checkpoint:
        prior_checked(filters.prior_checkpoint, latest)
    begin, end = _range_of(filters, latest.size)
    name = user.get_username() if user is not None else actor
    with transaction.atomic():
        job = ExportJob.objects.create(
            requested_by=user, requested_by_name=name, since=filters.since, until=filters.until,
            system=filters.system, correlation_id=filters.correlation_id,
            prior_checkpoint=filters.prior_checkpoint, begin=begin, end=end, checkpoint=latest,
            created_at=now,
        )  # fmt: skip
        journal_append(
            actor=user if user is not None else actor, action="ledger.export.request",
            subject=f"ledger_export:{job.pk}", details=_journal_details(job),
        )  # fmt: skip
    return job


def _range_of(filters: ExportFilters, size: int) -> tuple[int, int]:
    """[first, last + 1) of the entries whose time falls in [since, until), below `size`."""
    where, params = ["index < %s"], [size]
    if filters.since:
        where.append("at >= %s")
        params.append(filters.since)  # type: ignore[arg-type]
    if filters.until:
        where.append("at < %s")
        params.append(filters.until)  # type: ignore[arg-type]
    with connection.cursor() as cursor:
        cursor.execute(
            # The clauses are fixed strings above; only their parameters come from the user.
            f"SELECT min(index), max(index) FROM ledger_entry WHERE {' AND '.join(where)}",  # noqa: S608
            params,
        )
        first, last = cursor.fetchone()
    if first is None:
        since = rfc3339(filters.since) if filters.since else "the start"
        until = rfc3339(filters.until) if filters.until else "now"
        raise ExportRefused(
            f"No signed entries from {since} to {until} (the latest checkpoint holds {size})."
        )
    return int(first), int(last) + 1


def prior_checked(note: str, latest: Checkpoint) -> CheckpointBody:
    """A checkpoint from an earlier export: signed by this ledger's key, and the tree it
    describes is a prefix of today's. ExportRefused naming what does not hold."""
    if len(note.encode()) > PRIOR_MAX_BYTES:
        raise ExportRefused("The prior checkpoint is too large to be a checkpoint.")
    key = signing_key()
    try:
        body = checkpoint_body_parse(note_verify(note, verifier_key_parse(key.verifier_key)))
    except NoteError as error:
        raise ExportRefused(f"The prior checkpoint is not one of this ledger's: {error}.") from None
    if body.origin != key.name:
        raise ExportRefused(f"The prior checkpoint belongs to the log {body.origin!r}.")
    if body.size > latest.size:
        raise ExportRefused(
            f"The prior checkpoint (tree size {body.size}) is newer than this ledger's latest "
            f"({latest.size})."
        )
    if selectors.root_at(body.size) != body.root:
        raise ExportRefused(
            f"The prior checkpoint is inconsistent with this ledger: the log's root at tree "
            f"size {body.size} is not the one it signed. The history differs from what you saw."
        )
    return body


def ledger_export_run(
    *, job_id: int, now: datetime, destination: Path | None = None
) -> ExportJob | None:
    """Write the bundle of a queued job (to `destination`, else under TIDELINE_EXPORT_DIR).

    Claimed with a conditional update, so a second delivery of the task does nothing.
    """
    claimed = ExportJob.objects.filter(id=job_id, state=ExportJob.State.QUEUED).update(
        state=ExportJob.State.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return None
    job = ExportJob.objects.select_related("checkpoint", "requested_by").get(id=job_id)
    if job.requested_by is not None and not user_may(job.requested_by, Capability.AUDIT):
        return _failed(job, "The requester's role no longer allows exports.")
    export_dir = Path(settings.TIDELINE_EXPORT_DIR)
    target = destination or export_dir / f"ledger-export-{job.pk}-{job.begin}-{job.end}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Its own partial file: a worker the sweeper gave up on may still be writing the old one.
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        size = bundle_write(job, partial, exported_at=now, progress=_progress_saver(job))
        partial.replace(target)  # whole or not at all, for the download link
    except Exception as error:
        partial.unlink(missing_ok=True)
        logger.exception("ledger export %s failed", job.pk)
        return _failed(job, f"The bundle could not be written: {error}")
    relative = target.relative_to(export_dir) if target.is_relative_to(export_dir) else target
    return _done(job, str(relative), size)


def _this_run(job: ExportJob) -> QuerySet[ExportJob]:
    """The job while this worker's claim holds: the sweeper re-queues a job whose heartbeat
    stopped, and then only the worker that claimed it since may move it on."""
    return ExportJob.objects.filter(
        id=job.pk, state=ExportJob.State.RUNNING, started_at=job.started_at
    )


def _progress_saver(job: ExportJob) -> Callable[[int], None]:
    def saved(written: int) -> None:
        _this_run(job).update(written=written, heartbeat_at=timezone.now())

    return saved


def _done(job: ExportJob, file: str, size: int) -> ExportJob:
    with transaction.atomic():
        finished = _this_run(job).update(
            state=ExportJob.State.DONE, file=file, bytes=size, written=job.entries,
            finished_at=timezone.now(),
        )  # fmt: skip
        job.refresh_from_db()
        if not finished:
            return job
        journal_append(
            actor=job.requested_by or job.requested_by_name, action="ledger.export",
            subject=f"ledger_export:{job.pk}", details={**_journal_details(job), "bytes": size},
        )  # fmt: skip
    return job


def _failed(job: ExportJob, error: str) -> ExportJob:
    _this_run(job).update(
        state=ExportJob.State.FAILED, error=error[:2000], finished_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def _journal_details(job: ExportJob) -> dict[str, object]:
    return {
        "begin": job.begin, "end": job.end, "entries": job.entries,
        "tree_size": job.checkpoint.size,
        "since": rfc3339(job.since) if job.since else None,
        "until": rfc3339(job.until) if job.until else None,
        "system": job.system or None, "correlation_id": job.correlation_id or None,
        "prior": bool(job.prior_checkpoint),
    }  # fmt: skip


def ledger_exports_stale(*, now: datetime) -> list[int]:
    """Jobs to hand to a worker again: queued ones the broker may have lost, and running ones
    whose worker stopped reporting (it died); a running one is queued again first."""
    ExportJob.objects.filter(
        state=ExportJob.State.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    ).update(state=ExportJob.State.QUEUED, written=0)
    return list(
        ExportJob.objects.filter(
            state=ExportJob.State.QUEUED, created_at__lt=now - timedelta(minutes=1)
        ).values_list("id", flat=True)
    )
