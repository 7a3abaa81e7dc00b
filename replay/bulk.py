"""Bulk replay: a filter, a preview, one approval, then chunks driven from the database.

`bulk_replay_step` is the driver: it leases the job row, takes the next chunk of matching
dead letters after the job's cursor, turns each into a queued replay attempt (or a skipped
one with its reason) and advances the cursor in the same transaction, then queues the sends
and schedules itself again. A killed worker leaves either the whole chunk or none of it;
each attempt is still claimed before it is sent, so nothing goes out twice.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet

from console.services import journal_append
from replay.models import OPEN_STATES, BulkReplay, ReplayAttempt
from replay.safety import Evidence, safety_evidence
from replay.selectors import dead_letters_matching
from replay.services import (
    SEND_GROUP,
    ReplayOrder,
    ReplayRefused,
    attempt_new,
    dead_letters_moved,
)
from tracing.ingest.models import DeadLetter

if TYPE_CHECKING:
    from django.http import HttpRequest

    from console.services import Actor

CHUNK_WITHOUT_LIMIT = 200
GROUPS_BEHIND_NEXT_STEP = 3  # about what the other worker processes send while a step runs
STALLED_AFTER = timedelta(seconds=20)  # no step for this long: the driver is gone
PREVIEW_CHECKED = 1000  # the safety check of a preview looks at this many
# Poison ones are taken too, to be counted as skipped: the operator sees why they stay.
# In-doubt ones are not: the target may have them, and only a person decides to resend.
REPLAYABLE = [DeadLetter.State.NEW, DeadLetter.State.POISON]


@dataclass(frozen=True)
class Selection:
    system: str = ""
    definition: str = ""
    state: str = ""  # narrows the replayable states further, as the console's filter does
    error: str = ""
    since: datetime | None = None
    until: datetime | None = None
    up_to_id: int | None = (
        None  # fixed when the job starts: later dead letters are not its business
    )
    # Only these (an auto-replay rule's: the dead letters bound for its destination).
    dead_letter_ids: tuple[int, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "system": self.system, "definition": self.definition, "state": self.state, "error": self.error,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None, "up_to_id": self.up_to_id,
            **({"dead_letter_ids": list(self.dead_letter_ids)} if self.dead_letter_ids is not None else {}),
        }  # fmt: skip

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Selection:
        since, until = stored.get("since"), stored.get("until")
        return cls(
            system=stored.get("system") or "", definition=stored.get("definition") or "",
            state=stored.get("state") or "", error=stored.get("error") or "",
            since=datetime.fromisoformat(since) if since else None,
            until=datetime.fromisoformat(until) if until else None, up_to_id=stored.get("up_to_id"),
            dead_letter_ids=tuple(stored["dead_letter_ids"]) if "dead_letter_ids" in stored else None,
        )  # fmt: skip


def dead_letters_selected(selection: Selection) -> QuerySet[DeadLetter]:
    wanted = {
        "system": selection.system, "definition": selection.definition, "state": selection.state,
        "error": selection.error, "since": selection.since, "until": selection.until,
    }  # fmt: skip
    letters = dead_letters_matching(wanted).filter(state__in=REPLAYABLE)
    if selection.up_to_id is not None:
        letters = letters.filter(id__lte=selection.up_to_id)
    if selection.dead_letter_ids is not None:
        letters = letters.filter(id__in=selection.dead_letter_ids)
    return letters.order_by("id")


def bulk_replay_preview(*, selection: Selection, include_stale: bool) -> dict[str, Any]:
    """How many match, and how many of them the safety check would skip (and why)."""
    letters = dead_letters_selected(selection)
    matched = letters.count()
    skipped: dict[str, int] = {}
    approval = False
    checked = list(letters[:PREVIEW_CHECKED])
    evidence = safety_evidence(checked)
    for dead_letter in checked:
        verdict = _verdict(dead_letter, evidence)
        reason = _skip_reason(verdict, include_stale)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        approval = approval or bool(verdict.get("needs_approval"))
    return {
        "matched": matched, "checked": min(matched, PREVIEW_CHECKED), "would_skip": skipped,
        "needs_approval": approval,
    }  # fmt: skip


def _verdict(dead_letter: DeadLetter, evidence: Evidence) -> dict[str, Any]:
    try:
        order = ReplayOrder(dead_letter.id, dead_letter.version)
        attempt = attempt_new(dead_letter, order, None, evidence)
    except ReplayRefused as refused:
        return {"refused": refused.message}
    return attempt.verdict


def _skip_reason(verdict: dict[str, Any], include_stale: bool) -> str:
    if verdict.get("refused"):
        return "not allowed"
    if verdict.get("already_delivered"):
        return "already delivered"
    if verdict.get("poison"):
        return "poison"
    if verdict.get("stale") and not include_stale:
        return "stale"
    return ""


def bulk_replay_create(
    *, selection: Selection, rate_per_second: float, include_stale: bool, reason: str, actor: Actor,
    now: datetime, request: HttpRequest | None = None,
) -> BulkReplay:  # fmt: skip
    preview = bulk_replay_preview(selection=selection, include_stale=include_stale)
    if preview["matched"] == 0:
        raise ReplayRefused(400, "No dead letter waiting for a replay matches this filter.")
    if rate_per_second < 0:
        raise ReplayRefused(400, "The rate must be 0 (no limit) or more messages per second.")
    state = (
        BulkReplay.State.PENDING_APPROVAL if preview["needs_approval"] else BulkReplay.State.RUNNING
    )
    last = dead_letters_selected(selection).values_list("id", flat=True).last()
    selection = dataclasses.replace(selection, up_to_id=last)
    with transaction.atomic():
        job = BulkReplay.objects.create(
            selection=selection.as_json(), rate_per_second=rate_per_second, include_stale=include_stale,
            state=state, reason=reason, matched=preview["matched"],
            requested_by=actor if isinstance(actor, User) else None,
        )  # fmt: skip
        journal_append(actor=actor, action="bulk_replay.create", subject=f"bulk_replay:{job.id}",
                       details={"selection": job.selection, "preview": preview, "rate": rate_per_second},
                       request=request)  # fmt: skip
        if state == BulkReplay.State.RUNNING:
            _drive_after_commit(job)
    return job


def _drive_after_commit(job: BulkReplay, countdown: float = 0) -> None:
    from replay.tasks import bulk_replay_step_task

    job_id = str(job.id)
    transaction.on_commit(lambda: bulk_replay_step_task.apply_async((job_id,), countdown=countdown))


def bulk_replay_step(*, job_id: str, now: datetime) -> str:
    """Take one chunk (see the module's doc); the job's state afterwards."""
    with transaction.atomic():
        # The row lock is the driver's lease: a second driver skips, a dead one's lock dies
        # with its connection.
        job = BulkReplay.objects.select_for_update(skip_locked=True).filter(id=job_id).first()
        if job is None:
            return "driven elsewhere"
        if job.state != BulkReplay.State.RUNNING:
            return job.state
        if job.lease_until and job.lease_until > now:
            return "not yet"  # the rate's next second has not come
        chunk = _chunk(job)
        if not chunk:
            return _finish_if_drained(job, now)
        queued = _attempts_of_job(job, chunk, now)
        pause = 1.0 if job.rate_per_second else 0.0
        job.cursor, job.lease_until = chunk[-1].id, now + timedelta(seconds=pause)
        job.save(update_fields=["cursor", "lease_until"])
        _sends_and_next_step_after_commit(job, queued, pause)
    return job.state


def _sends_and_next_step_after_commit(
    job: BulkReplay, attempt_ids: list[str], pause: float
) -> None:
    """One task per SEND_GROUP attempts, not one per attempt: the broker round trips were
    most of a bulk replay's time. The task claims its group with one conditional update and
    sends only what that update returned (`replay.sending`).

    The next step goes into the queue ahead of the chunk's last groups: one worker process
    prepares the next chunk while the others send those. Queued behind all of them, it left
    the other processes idle while it ran. The job still runs at most one chunk ahead."""
    from replay.tasks import replay_send_group_task

    groups = [attempt_ids[i : i + SEND_GROUP] for i in range(0, len(attempt_ids), SEND_GROUP)]
    ahead = max(0, len(groups) - GROUPS_BEHIND_NEXT_STEP)
    for group in groups[:ahead]:
        transaction.on_commit(functools.partial(replay_send_group_task.delay, group))
    _drive_after_commit(job, countdown=pause)
    for group in groups[ahead:]:
        transaction.on_commit(functools.partial(replay_send_group_task.delay, group))


def _chunk(job: BulkReplay) -> list[DeadLetter]:
    size = max(1, int(job.rate_per_second)) if job.rate_per_second else CHUNK_WITHOUT_LIMIT
    letters = dead_letters_selected(Selection.of(job.selection)).filter(id__gt=job.cursor)
    # A plain lock: skipping a locked one would move the cursor past it for good.
    return list(letters.select_for_update()[:size])


def _attempts_of_job(job: BulkReplay, chunk: list[DeadLetter], now: datetime) -> list[str]:
    """Each dead letter of the chunk as a queued attempt or a skipped one (with its reason), in
    a few set-based statements for the whole chunk; the queued attempts' IDs."""
    evidence = safety_evidence(chunk)
    in_progress = set(
        ReplayAttempt.objects.filter(dead_letter__in=chunk, state__in=OPEN_STATES).values_list(
            "dead_letter_id", flat=True
        )
    )
    attempts = [
        _attempt_of_job(job, dead_letter, now, evidence, dead_letter.id in in_progress)
        for dead_letter in chunk
    ]
    _attempts_insert(attempts)
    queued = [a for a in attempts if a.state == ReplayAttempt.State.QUEUED]
    dead_letters_moved([a.dead_letter for a in queued], DeadLetter.State.REPLAY_REQUESTED, now)
    return [str(a.id) for a in queued]


def _attempts_insert(attempts: list[ReplayAttempt]) -> None:
    """The chunk's attempts in one COPY: building a 200-row INSERT cost the driver more than
    PostgreSQL took to run it. `requested_at` is left to its database default, as an INSERT
    leaves it."""
    fields = [f for f in ReplayAttempt._meta.concrete_fields if f.name != "requested_at"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(ReplayAttempt._meta.db_table)
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for attempt in attempts:
            copy.write_row(
                [f.get_db_prep_save(getattr(attempt, f.attname), connection) for f in fields]
            )


def _attempt_of_job(
    job: BulkReplay, dead_letter: DeadLetter, now: datetime, evidence: Evidence, in_progress: bool
) -> ReplayAttempt:
    """The attempt, queued or skipped with its reason; not yet stored."""
    order = ReplayOrder(
        dead_letter.id, dead_letter.version, confirm_stale=job.include_stale, reason=job.reason
    )
    try:
        attempt = attempt_new(dead_letter, order, job.requested_by, evidence)
    except ReplayRefused as refused:
        attempt = ReplayAttempt(dead_letter=dead_letter, dead_letter_version=dead_letter.version,
                                payload=b"", payload_digest=b"", transport=dead_letter.transport,
                                destination=dead_letter.destination, address="", idempotency_key="",
                                verdict={"refused": refused.message})  # fmt: skip
    attempt.bulk = job
    reason = _skip_reason(attempt.verdict, job.include_stale)
    if not reason and in_progress:
        reason = "a replay is already in progress"
    if not reason and attempt.verdict.get("needs_approval") and job.decided_by_id is None:
        # The preview judged a sample; this one needs four eyes that nobody gave the job.
        reason = "needs approval: " + ", ".join(attempt.verdict["needs_approval"])
    if reason:
        attempt.state, attempt.outcome, attempt.finished_at = (
            ReplayAttempt.State.SKIPPED,
            reason,
            now,
        )
        return attempt
    attempt.state = ReplayAttempt.State.QUEUED  # one approval covers the whole job
    return attempt


def _finish_if_drained(job: BulkReplay, now: datetime) -> str:
    still_open = ReplayAttempt.objects.filter(bulk=job, state__in=OPEN_STATES).exists()
    if still_open:
        job.lease_until = now + timedelta(seconds=1)  # alive: the sweeper leaves it alone
        job.save(update_fields=["lease_until"])
        _drive_after_commit(job, countdown=1.0)
        return job.state
    job.state, job.finished_at = BulkReplay.State.DONE, now
    job.save(update_fields=["state", "finished_at"])
    journal_append(actor="replay-worker", action="bulk_replay.done", subject=f"bulk_replay:{job.id}",
                   details=bulk_replay_counts(job))  # fmt: skip
    return job.state


def bulk_replay_counts(job: BulkReplay) -> dict[str, int]:
    by_state = dict(
        ReplayAttempt.objects.filter(bulk=job)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    taken = sum(by_state.values())
    return {
        "matched": job.matched, "taken": taken, "sent": by_state.get("delivered", 0),
        "failed": by_state.get("failed", 0), "in_doubt": by_state.get("in_doubt", 0),
        "skipped": by_state.get("skipped", 0), "cancelled": by_state.get("cancelled", 0),
        "waiting": sum(by_state.get(state, 0) for state in OPEN_STATES),
    }  # fmt: skip


def bulk_replay_control(
    *, job_id: str, action: str, actor: Actor, now: datetime, reason: str = "",
    request: HttpRequest | None = None,
) -> BulkReplay:  # fmt: skip
    """pause, resume, cancel, approve or reject a job."""
    with transaction.atomic():
        job = BulkReplay.objects.select_for_update().filter(id=job_id).first()
        if job is None:
            raise ReplayRefused(404, f"No bulk replay has the ID {job_id}.")
        _control(job, action, actor, now, reason)
        journal_append(actor=actor, action=f"bulk_replay.{action}", subject=f"bulk_replay:{job.id}",
                       details={"reason": reason}, request=request)  # fmt: skip
    return job


_ALLOWED = {
    "pause": {BulkReplay.State.RUNNING},
    "resume": {BulkReplay.State.PAUSED},
    "cancel": {
        BulkReplay.State.RUNNING,
        BulkReplay.State.PAUSED,
        BulkReplay.State.PENDING_APPROVAL,
    },
    "approve": {BulkReplay.State.PENDING_APPROVAL},
    "reject": {BulkReplay.State.PENDING_APPROVAL},
}


def _control(job: BulkReplay, action: str, actor: Actor, now: datetime, reason: str) -> None:
    if job.state not in _ALLOWED[action]:
        raise ReplayRefused(
            409, f"This bulk replay is {job.state.replace('_', ' ')}; it cannot {action} now."
        )
    if action in ("approve", "reject"):
        if job.requested_by_id is not None and job.requested_by_id == getattr(actor, "pk", None):
            raise ReplayRefused(
                403, "You started this bulk replay; another operator must approve or reject it."
            )
        job.decided_by = actor if isinstance(actor, User) else None
    if action in ("approve", "resume"):
        job.state, job.lease_until = BulkReplay.State.RUNNING, None
        _drive_after_commit(job)
    elif action == "pause":
        job.state = BulkReplay.State.PAUSED
    else:
        job.state = BulkReplay.State.CANCELLED if action == "cancel" else BulkReplay.State.REJECTED
        job.finished_at = now
        bulk_queued_cancel(job, now)
    job.save()


def bulk_queued_cancel(job: BulkReplay, now: datetime) -> None:
    """Attempts not yet claimed are never sent; their dead letters wait again."""
    queued = list(
        ReplayAttempt.objects.select_for_update()
        .filter(bulk=job, state=ReplayAttempt.State.QUEUED)
        .order_by("id")
        .only("id", "dead_letter_id")
    )
    ReplayAttempt.objects.filter(id__in=[a.id for a in queued]).update(
        state=ReplayAttempt.State.CANCELLED, finished_at=now
    )
    letters = DeadLetter.objects.select_for_update().order_by("id")
    waiting = letters.filter(id__in=[a.dead_letter_id for a in queued]).only(
        "id", "version", "correlation_id", "message_id"
    )
    dead_letters_moved(list(waiting), DeadLetter.State.NEW, now)


def bulk_replays_sweep(*, now: datetime) -> int:
    """Beat: a running job whose driver died (or whose next step the broker lost) goes on."""
    from replay.tasks import bulk_replay_step_task

    stalled = BulkReplay.objects.filter(state=BulkReplay.State.RUNNING).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now - STALLED_AFTER)
    )
    ids = [str(job_id) for job_id in stalled.values_list("id", flat=True)]
    for job_id in ids:
        bulk_replay_step_task.delay(job_id)
    return len(ids)
