"""Sending replay attempts: claim, send, record; one attempt, or a bulk job's group of them.

A group is claimed with one conditional update (`... WHERE id = ANY(...) AND state =
'queued' RETURNING id`): only the rows it returns are sent, so a task run twice, or alongside
the sweeper, sends nothing twice. A send then begins with a small conditional update that
sets `sent_at`, committed before a byte leaves: a worker killed mid-group leaves the messages
it never began with `sent_at` NULL, and the sweeper returns those to the queue
(`replays_unstarted_requeue`); only those whose send began may have arrived and become in
doubt. That update is made for each message sent alone (HTTP, Redis), and once for the
AMQP messages to one broker, which are published together and whose confirms are awaited
together (`transports.deliver_together`): waiting for each message's own confirm was most of
an AMQP replay's time. A worker killed between that update and the last confirm leaves the
whole AMQP group in doubt: any of it may have arrived.

The sends reuse the worker process's connection to each target (see `replay.transports`).
The outcomes, the dead letters' new states, their flow marks and the journal entries are
written in one transaction per group, in bulk statements: per-message round trips to
PostgreSQL were most of a bulk replay's time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef

from console.services import journal_append_many
from replay import transports
from replay.bulk import bulk_queued_cancel
from replay.models import BulkReplay, ReplayAttempt
from replay.safety import poison_of
from replay.services import SEND_GROUP, WORKER, dead_letters_moved, delivery_of
from tracing.ingest.models import DeadLetter

NOT_CLAIMED = "not claimed"
REQUEUED = "returned to the queue: its send never began"
# After its worst send (connect, write and read, each up to the timeout) a message still has
# this long to be recorded before the sweeper may call it in doubt.
LEASE_MARGIN = timedelta(seconds=30)

_OUTCOME_STATES = {
    "delivered": (ReplayAttempt.State.DELIVERED, DeadLetter.State.REPLAYED),
    "failed": (ReplayAttempt.State.FAILED, DeadLetter.State.NEW),
    "unknown": (ReplayAttempt.State.IN_DOUBT, DeadLetter.State.IN_DOUBT),
}


def _one_send() -> timedelta:
    return timedelta(seconds=settings.TIDELINE_REPLAY_TIMEOUT_SECONDS * 3)


def replay_send_group(*, attempt_ids: Sequence[str], now: datetime) -> list[str]:
    """Claim, send, record; each attempt's state afterwards, or "not claimed" (another run
    has it, or it is no longer queued). Safe to run any number of times."""
    attempts = _claimed(attempt_ids, now)
    outcomes = _sent(attempts, now)
    states = replay_outcomes_record(outcomes=outcomes, now=datetime.now(tz=now.tzinfo))
    return [states.get(attempt_id, NOT_CLAIMED) for attempt_id in attempt_ids]


def _claimed(attempt_ids: Sequence[str], now: datetime) -> list[ReplayAttempt]:
    """The attempts this run claimed, in the order asked, each journaled as being sent."""
    with transaction.atomic():
        claimed = replays_claim(list(attempt_ids), now + _one_send() + LEASE_MARGIN, now)
        if not claimed:
            return []
        # The dead letter's own payload is not sent (the attempt's is): not read either.
        loaded = ReplayAttempt.objects.select_related("dead_letter").defer(
            "dead_letter__payload", "dead_letter__history"
        )
        by_id = {str(attempt.id): attempt for attempt in loaded.filter(id__in=claimed)}
        attempts = [by_id[attempt_id] for attempt_id in attempt_ids if attempt_id in by_id]
        journal_append_many(
            actor=WORKER, action="replay.send",
            entries=[(f"dead_letter:{a.dead_letter_id}", {"attempt": str(a.id), "address": a.address})
                     for a in attempts],
        )  # fmt: skip
    return attempts


def replays_claim(attempt_ids: list[str], lease_until: datetime, now: datetime) -> set[str]:
    """One conditional update: a row another run claimed first is not returned, nor sent.
    `sent_at` stays NULL until the message's send begins (`replay_sends_begin`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ReplayAttempt._meta.db_table} SET state = 'sending', lease_until = %s "  # noqa: S608 - our own table name
            "WHERE id = ANY(%s::uuid[]) AND state = 'queued' RETURNING id",
            [lease_until, attempt_ids],
        )
        return {str(row[0]) for row in cursor.fetchall()}


def _sent(attempts: list[ReplayAttempt], now: datetime) -> dict[str, transports.Outcome]:
    """Send each claimed attempt once, each only if its send could begin (`replay_sends_begin`).
    The group shares one lease, whose value is also this run's mark on its rows: before a send
    that might outlast it, the lease of the whole group is renewed — the messages already sent
    too, whose outcomes are recorded only at the end (else the sweeper would call delivered
    messages in doubt and invite a resend)."""
    timeout = settings.TIDELINE_REPLAY_TIMEOUT_SECONDS
    lease_until = now + _one_send() + LEASE_MARGIN
    outcomes: dict[str, transports.Outcome] = {}
    held = sorted(str(attempt.id) for attempt in attempts)
    for together, batch in _batches(attempts):
        clock = datetime.now(tz=now.tzinfo)
        if clock + _one_send() + LEASE_MARGIN / 2 > lease_until:
            renewed = clock + _one_send() + LEASE_MARGIN
            _lease_renew(held, lease_until, renewed)
            lease_until = renewed
        begun = replay_sends_begin(list(batch), lease_until, clock)
        sending = {attempt_id: batch[attempt_id] for attempt_id in batch if attempt_id in begun}
        if not sending:
            continue
        if together:
            sent = transports.deliver_together(list(sending.values()), timeout=timeout)
        else:
            sent = [transports.deliver(delivery, timeout=timeout) for delivery in sending.values()]
        outcomes.update(zip(sending, sent, strict=True))
    return outcomes


def _batches(attempts: list[ReplayAttempt]) -> list[tuple[bool, dict[str, transports.Delivery]]]:
    """The claimed attempts as they are sent, in the order claimed: each alone, or together
    with the others to the same AMQP broker (see `transports.together_key`)."""
    batches: list[tuple[bool, dict[str, transports.Delivery]]] = []
    together: dict[str, dict[str, transports.Delivery]] = {}
    for attempt in attempts:
        delivery = delivery_of(attempt)
        key = transports.together_key(delivery)
        if key is None:
            batches.append((False, {str(attempt.id): delivery}))
            continue
        if key not in together:
            together[key] = {}
            batches.append((True, together[key]))
        together[key][str(attempt.id)] = delivery
    return batches


def _lease_renew(attempt_ids: list[str], held: datetime, lease_until: datetime) -> None:
    """Only rows still under the lease this run holds: one the sweeper put back in the queue,
    and another run claimed since, carries that run's lease."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ReplayAttempt._meta.db_table} SET lease_until = %s "  # noqa: S608 - our own table name
            "WHERE id = ANY(%s::uuid[]) AND state = 'sending' AND lease_until = %s",
            [lease_until, attempt_ids, held],
        )


def replay_sends_begin(attempt_ids: list[str], lease_until: datetime, now: datetime) -> set[str]:
    """The moment these messages' send begins, committed before a byte leaves (autocommit):
    from here on each may have arrived. Only those returned are still this run's to send (not
    one the sweeper returned to the queue, or called in doubt; another run holds it now)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ReplayAttempt._meta.db_table} SET sent_at = %s "  # noqa: S608 - our own table name
            "WHERE id = ANY(%s::uuid[]) AND state = 'sending' AND sent_at IS NULL "
            "AND lease_until = %s RETURNING id",
            [now, attempt_ids, lease_until],
        )
        return {str(row[0]) for row in cursor.fetchall()}


def replays_unstarted_requeue(*, now: datetime) -> list[str]:
    """Sweeper: attempts whose lease ran out before their send began (the worker died holding
    a group) never left, so they go back to the queue and are sent again by the same task a
    bulk job uses; the claim and the one-open-attempt index keep that to once. An attempt of a
    job cancelled meanwhile is cancelled instead, as the job's other queued ones were."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {ReplayAttempt._meta.db_table} SET state = 'queued', lease_until = NULL "  # noqa: S608 - our own table name
                "WHERE state = 'sending' AND sent_at IS NULL AND lease_until < %s "
                "RETURNING id, dead_letter_id, bulk_id",
                [now],
            )
            rows = cursor.fetchall()
        if not rows:
            return []
        journal_append_many(
            actor=WORKER, action="replay.requeue",
            entries=[(f"dead_letter:{letter}", {"attempt": str(attempt), "reason": REQUEUED})
                     for attempt, letter, _ in rows],
        )  # fmt: skip
        jobs = BulkReplay.objects.select_for_update().filter(id__in={r[2] for r in rows if r[2]})
        for job in jobs.order_by("id"):
            if job.state in (BulkReplay.State.CANCELLED, BulkReplay.State.REJECTED):
                bulk_queued_cancel(job, now)
        queued = [
            str(attempt_id)
            for attempt_id in ReplayAttempt.objects.filter(
                id__in=[r[0] for r in rows], state=ReplayAttempt.State.QUEUED
            ).values_list("id", flat=True)
        ]
        _sends_after_commit(queued)
    return queued


def _sends_after_commit(attempt_ids: list[str]) -> None:
    from replay.tasks import replay_send_group_task

    for start in range(0, len(attempt_ids), SEND_GROUP):
        group = attempt_ids[start : start + SEND_GROUP]
        transaction.on_commit(functools.partial(replay_send_group_task.delay, group))


def replay_outcomes_record(
    *, outcomes: dict[str, transports.Outcome], now: datetime, lease_expired: bool = False
) -> dict[str, str]:
    """Record what became of sent attempts, in one transaction; each one's state afterwards.

    The sweeper may have called one in doubt meanwhile; the real outcome is better news. The
    sweeper itself (`lease_expired`) records only sends whose lease is still over once locked:
    a sender that renewed its lease is still at work. A dead letter moves only while it still
    waits for this attempt (not when it died again meanwhile, or a newer replay has begun)."""
    if not outcomes:
        return {}
    with transaction.atomic():
        attempts = list(
            ReplayAttempt.objects.select_for_update()
            .filter(id__in=list(outcomes))
            .order_by("id")
            .only("id", "state", "dead_letter_id", "requested_at", "lease_until")
        )
        states = {str(a.id): str(a.state) for a in attempts}
        recorded = [a for a in attempts if _open_for_outcome(a, now, lease_expired)]
        for attempt in recorded:
            outcome = outcomes[str(attempt.id)]
            attempt.state, attempt.finished_at = _OUTCOME_STATES[outcome.state][0], now
            attempt.outcome, attempt.outcome_status = outcome.detail, outcome.status
            states[str(attempt.id)] = attempt.state
        _outcomes_write(recorded, now)
        _dead_letters_follow(recorded, outcomes, now)
        journal_append_many(
            actor=WORKER, action="replay.outcome", entries=_outcome_entries(recorded, outcomes)
        )
    return states


def _outcomes_write(recorded: list[ReplayAttempt], now: datetime) -> None:
    """One UPDATE for the group (Django's bulk_update costs more to build than to run)."""
    if not recorded:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ReplayAttempt._meta.db_table} AS attempt "  # noqa: S608 - our own table name
            "SET state = outcome.state, outcome = outcome.detail, outcome_status = outcome.status, "
            "finished_at = %s "
            "FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::int[]) AS outcome(id, state, detail, status) "
            "WHERE attempt.id = outcome.id",
            [now, [str(a.id) for a in recorded], [str(a.state) for a in recorded],
             [a.outcome for a in recorded], [a.outcome_status for a in recorded]],
        )  # fmt: skip


def _open_for_outcome(attempt: ReplayAttempt, now: datetime, lease_expired: bool) -> bool:
    if lease_expired:
        return attempt.state == ReplayAttempt.State.SENDING and bool(
            attempt.lease_until and attempt.lease_until < now
        )
    return attempt.state in (ReplayAttempt.State.SENDING, ReplayAttempt.State.IN_DOUBT)


def _dead_letters_follow(
    recorded: list[ReplayAttempt], outcomes: dict[str, transports.Outcome], now: datetime
) -> None:
    letters = DeadLetter.objects.select_for_update().order_by("id")
    waiting = {
        letter.id: letter
        for letter in letters.filter(id__in=[a.dead_letter_id for a in recorded]).only(
            "id", "state", "version", "correlation_id", "message_id"
        )
        if letter.state in (DeadLetter.State.REPLAY_REQUESTED, DeadLetter.State.IN_DOUBT)
    }
    failed = [a.dead_letter_id for a in recorded if a.state == ReplayAttempt.State.FAILED]
    poison = poison_of(failed)
    overtaken = _overtaken(recorded)
    moves: dict[str, list[DeadLetter]] = {}
    for attempt in recorded:
        letter = waiting.get(attempt.dead_letter_id)
        if letter is None or attempt.id in overtaken:
            continue
        letter_state: str = _OUTCOME_STATES[outcomes[str(attempt.id)].state][1]
        if attempt.dead_letter_id in poison:
            letter_state = DeadLetter.State.POISON
        moves.setdefault(letter_state, []).append(letter)
    for state, moved in moves.items():
        dead_letters_moved(moved, state, now)


def _overtaken(attempts: list[ReplayAttempt]) -> set[Any]:
    """The attempts whose dead letter has a newer replay attempt."""
    newer = ReplayAttempt.objects.filter(
        dead_letter_id=OuterRef("dead_letter_id"), requested_at__gt=OuterRef("requested_at")
    )
    of_these = ReplayAttempt.objects.filter(id__in=[a.id for a in attempts])
    return set(of_these.filter(Exists(newer)).values_list("id", flat=True))


def _outcome_entries(
    recorded: Iterable[ReplayAttempt], outcomes: dict[str, transports.Outcome]
) -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for attempt in recorded:
        outcome = outcomes[str(attempt.id)]
        details = {"attempt": str(attempt.id), "state": attempt.state, "detail": outcome.detail,
                   "status": outcome.status}  # fmt: skip
        entries.append((f"dead_letter:{attempt.dead_letter_id}", details))
    return entries
