"""Replay use cases: request, approve, reject, send, confirm, sweep; resolve and discard.

Every change happens in one transaction with the dead letter locked (`select_for_update`),
is journaled, and touches the dead letter's flow so its summary follows. Sending happens
outside any transaction, after a conditional update claimed the attempt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F

from console.services import journal_append
from replay import transports
from replay.models import OPEN_STATES, ReplayAttempt
from replay.payloads import PayloadInvalid, payload_check
from replay.safety import Evidence, address_allowed, replay_verdict, safety_evidence
from tracing.flows.models import FlowInstance
from tracing.ingest.models import DeadLetter
from tracing.ingest.services import dead_letters_touch

if TYPE_CHECKING:
    from django.http import HttpRequest

    from console.services import Actor

WORKER = "replay-worker"
SEND_GROUP = 20  # attempts per send task: a bulk job's chunk is shared by the worker processes
CLOSED_STATES = {DeadLetter.State.RESOLVED, DeadLetter.State.DISCARDED, DeadLetter.State.REPLAYED}


class ReplayRefused(Exception):
    """A clear refusal: nothing sent, nothing changed."""

    def __init__(self, status: int, message: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.current = status, message, current or {}


@dataclass
class ReplayOrder:
    """What an operator asks for: the version seen and, optionally, a repair or a redirect."""

    dead_letter_id: int
    version_seen: int
    payload: bytes | None = None  # a repaired payload; None sends the stored one
    headers: dict[str, Any] | None = None
    destination: dict[str, Any] | None = None  # a redirect to another allowed destination
    to_exchange: bool = False
    reason: str = ""
    confirm_stale: bool = False


def idempotency_key(dead_letter: DeadLetter, payload_digest: bytes) -> str:
    """The same for every replay of these bytes of this dead letter, whoever asks, whenever."""
    identity = f"{dead_letter.sender}/{dead_letter.message_key}".encode() + payload_digest
    return "tl-" + hashlib.sha256(identity).hexdigest()[:40]


def delivery_of(attempt: ReplayAttempt) -> transports.Delivery:
    dead_letter = attempt.dead_letter
    return transports.Delivery(
        transport=attempt.transport, destination=attempt.destination, payload=bytes(attempt.payload),
        content_type=attempt.content_type, headers=attempt.headers, properties=dead_letter.properties,
        message_id=dead_letter.message_id, idempotency_key=attempt.idempotency_key,
        attempt_id=str(attempt.id), broker_url=broker_url(attempt.transport),
        amqp_to_exchange=attempt.to_exchange, correlation_id=dead_letter.correlation_id or "",
    )  # fmt: skip


def broker_url(transport: str) -> str:
    """The broker a replay over `transport` goes to, unless its destination names its own."""
    if transport == "amqp":
        return str(settings.TIDELINE_REPLAY_AMQP_URL or "")
    if transport == "redis":
        return str(settings.TIDELINE_REPLAY_REDIS_URL or "")
    return ""


def replay_request(
    *, order: ReplayOrder, actor: Actor, now: datetime, request: HttpRequest | None = None
) -> ReplayAttempt:
    """One attempt, queued or waiting for approval; ReplayRefused says why not."""
    with transaction.atomic():
        dead_letter = _dead_letter_locked(order.dead_letter_id)
        _refuse_unless_replayable(dead_letter, order)
        attempt = attempt_new(dead_letter, order, actor)
        _refuse_unsafe(attempt.verdict, order)
        try:
            with transaction.atomic():
                attempt.save(force_insert=True)
        except IntegrityError:
            raise ReplayRefused(
                409, "A replay of this dead letter is already in progress."
            ) from None
        dead_letter_moved(dead_letter, DeadLetter.State.REPLAY_REQUESTED, now)
        journal_append(
            actor=actor, action="replay.request", subject=f"dead_letter:{dead_letter.id}", request=request,
            details={"attempt": str(attempt.id), "state": attempt.state, "verdict": attempt.verdict,
                     "repaired": attempt.repaired, "address": attempt.address, "reason": order.reason},
        )  # fmt: skip
        if attempt.state == ReplayAttempt.State.QUEUED:
            send_after_commit(attempt)
    return attempt


def replay_preview(*, order: ReplayOrder) -> dict[str, Any]:
    """The dry run: the exact request and the safety verdict, nothing stored or sent."""
    dead_letter = DeadLetter.objects.filter(id=order.dead_letter_id).first()
    if dead_letter is None:
        raise ReplayRefused(404, f"No dead letter has the ID {order.dead_letter_id}.")
    attempt = attempt_new(dead_letter, order, None)
    return {"request": transports.request_preview(delivery_of(attempt)), "verdict": attempt.verdict}


def _dead_letter_locked(dead_letter_id: int) -> DeadLetter:
    dead_letter = DeadLetter.objects.select_for_update().filter(id=dead_letter_id).first()
    if dead_letter is None:
        raise ReplayRefused(404, f"No dead letter has the ID {dead_letter_id}.")
    return dead_letter


def dead_letter_current(dead_letter: DeadLetter) -> dict[str, Any]:
    return {"id": dead_letter.id, "state": dead_letter.state, "version": dead_letter.version}


def _refuse_unless_replayable(dead_letter: DeadLetter, order: ReplayOrder) -> None:
    current = dead_letter_current(dead_letter)
    if ReplayAttempt.objects.filter(dead_letter=dead_letter, state__in=OPEN_STATES).exists():
        raise ReplayRefused(409, "A replay of this dead letter is already in progress.", current)
    if dead_letter.state in CLOSED_STATES:
        raise ReplayRefused(409, f"This dead letter is {dead_letter.get_state_display().lower()}; "
                                 "there is nothing to replay.", current)  # fmt: skip
    if order.version_seen != dead_letter.version:
        raise ReplayRefused(
            409,
            f"The dead letter changed since you saw it (version {order.version_seen}, now "
            f"{dead_letter.version}); look at it again before replaying.",
            current,
        )


def attempt_new(
    dead_letter: DeadLetter, order: ReplayOrder, actor: Actor, evidence: Evidence | None = None
) -> ReplayAttempt:
    """The attempt an order makes, with its safety verdict; `evidence`, when a bulk job read it
    for a whole chunk at once, saves reading it for this one dead letter."""
    if evidence is None:
        evidence = safety_evidence([dead_letter])
    payload = bytes(dead_letter.payload) if order.payload is None else order.payload
    headers = dead_letter.headers if order.headers is None else order.headers
    if order.payload is not None:
        try:
            payload_check(payload, dead_letter.content_type, _payload_schema(dead_letter))
        except PayloadInvalid as invalid:
            raise ReplayRefused(400, str(invalid)) from None
    destination = order.destination or dead_letter.destination
    try:
        address = transports.destination_address(
            dead_letter.transport, destination, broker_url(dead_letter.transport),
            amqp_to_exchange=order.to_exchange,
        )  # fmt: skip
    except transports.DestinationInvalid as invalid:
        raise ReplayRefused(400, str(invalid)) from None
    if not address_allowed(address, evidence.destinations):
        raise ReplayRefused(
            403, f"{address} is not an allowed replay destination; an admin keeps that list."
        )
    digest = hashlib.sha256(payload).digest()
    redirected = order.destination is not None and order.destination != dead_letter.destination
    verdict = replay_verdict(
        dead_letter=dead_letter, address=address, redirected=redirected or order.to_exchange,
        evidence=evidence,
    )  # fmt: skip
    user = actor if isinstance(actor, User) else None
    return ReplayAttempt(
        dead_letter=dead_letter, dead_letter_version=order.version_seen, payload=payload, payload_digest=digest,
        repaired=payload != bytes(dead_letter.payload) or headers != dead_letter.headers, headers=headers,
        content_type=dead_letter.content_type, transport=dead_letter.transport, destination=destination,
        address=address, redirected=redirected, to_exchange=order.to_exchange,
        idempotency_key=idempotency_key(dead_letter, digest), verdict=verdict.as_json(),
        state=ReplayAttempt.State.PENDING_APPROVAL if verdict.needs_approval else ReplayAttempt.State.QUEUED,
        reason=order.reason, requested_by=user,
    )  # fmt: skip


def _refuse_unsafe(verdict: dict[str, Any], order: ReplayOrder) -> None:
    if verdict["already_delivered"]:
        raise ReplayRefused(
            409, f"Already delivered: {verdict['already_delivered']}.", {"verdict": verdict}
        )
    if verdict["poison"]:
        raise ReplayRefused(409, f"Poison: {verdict['poison']}.", {"verdict": verdict})
    if verdict["stale"] and not (order.confirm_stale and order.reason.strip()):
        raise ReplayRefused(
            409,
            f"Stale: {verdict['stale']}. Confirm with a reason to replay it anyway.",
            {"verdict": verdict},
        )


def _payload_schema(dead_letter: DeadLetter) -> dict[str, Any] | None:
    """The JSON Schema of the step this dead letter's flow stopped at, if its definition has one."""
    if not dead_letter.correlation_id:
        return None
    flow = (
        FlowInstance.objects.select_related("definition")
        .filter(correlation_id=dead_letter.correlation_id)
        .first()
    )
    if flow is None or flow.definition is None or not flow.stopped_at:
        return None
    step = flow.definition.steps.filter(
        key=flow.stopped_at, system__name=dead_letter.system
    ).first()
    return step.payload_schema if step is not None else None


def dead_letter_moved(dead_letter: DeadLetter, state: str, now: datetime) -> None:
    dead_letters_moved([dead_letter], state, now)


def dead_letters_moved(dead_letters: list[DeadLetter], state: str, now: datetime) -> None:
    """Dead letters the caller has locked, moved to one state in one UPDATE. Every change
    bumps the version, so a request made on an older view is refused."""
    DeadLetter.objects.filter(id__in=[d.id for d in dead_letters]).update(
        state=state, version=F("version") + 1, updated_at=now
    )
    for dead_letter in dead_letters:
        dead_letter.state, dead_letter.version = state, dead_letter.version + 1
        dead_letter.updated_at = now
    dead_letters_touch(dead_letters)


def send_after_commit(attempt: ReplayAttempt) -> None:
    from replay.tasks import replay_send_task

    attempt_id = str(attempt.id)
    transaction.on_commit(lambda: replay_send_task.delay(attempt_id))


def replay_decide(
    *, attempt_id: str, approve: bool, actor: Actor, reason: str, now: datetime,
    request: HttpRequest | None = None,
) -> ReplayAttempt:  # fmt: skip
    """Four eyes: another operator approves (queued) or rejects (never sent) a pending replay."""
    with transaction.atomic():
        attempt = _attempt_locked(attempt_id)
        if attempt.state != ReplayAttempt.State.PENDING_APPROVAL:
            raise ReplayRefused(
                409, f"This replay is {attempt.state.replace('_', ' ')}, not waiting for approval."
            )
        if attempt.requested_by_id is not None and attempt.requested_by_id == getattr(
            actor, "pk", None
        ):
            raise ReplayRefused(
                403, "You requested this replay; another operator must approve or reject it."
            )
        if not approve and not reason.strip():
            raise ReplayRefused(400, "Say why the replay is rejected.")
        if approve:
            _recheck_before_approval(attempt)
        attempt.state = ReplayAttempt.State.QUEUED if approve else ReplayAttempt.State.REJECTED
        attempt.decided_by = actor if isinstance(actor, User) else None
        attempt.decided_at, attempt.decision_reason = now, reason
        attempt.finished_at = None if approve else now
        attempt.save()
        if not approve:
            dead_letter_moved(
                _dead_letter_locked(attempt.dead_letter_id), DeadLetter.State.NEW, now
            )
        journal_append(
            actor=actor, action="replay.approve" if approve else "replay.reject",
            subject=f"dead_letter:{attempt.dead_letter_id}", request=request,
            details={"attempt": str(attempt.id), "reason": reason},
        )  # fmt: skip
        if approve:
            send_after_commit(attempt)
    return attempt


def _recheck_before_approval(attempt: ReplayAttempt) -> None:
    """Time passed while the request waited: the message may have died again, been delivered
    after all, or been overtaken by a newer one. Approve only what is still true."""
    dead_letter = _dead_letter_locked(attempt.dead_letter_id)
    if dead_letter.state != DeadLetter.State.REPLAY_REQUESTED:
        raise ReplayRefused(
            409, "The dead letter changed while this replay waited; reject it and request again.",
            dead_letter_current(dead_letter),
        )  # fmt: skip
    verdict = replay_verdict(
        dead_letter=dead_letter, address=attempt.address, redirected=attempt.redirected or attempt.to_exchange,
        evidence=safety_evidence([dead_letter]),
    ).as_json()  # fmt: skip
    confirmed_stale = bool(attempt.verdict.get("stale")) and bool(attempt.reason.strip())
    order = ReplayOrder(
        dead_letter.id, dead_letter.version, confirm_stale=confirmed_stale, reason=attempt.reason
    )
    _refuse_unsafe(verdict, order)
    attempt.verdict = verdict


def _attempt_locked(attempt_id: str) -> ReplayAttempt:
    attempt = ReplayAttempt.objects.select_for_update().filter(id=attempt_id).first()
    if attempt is None:
        raise ReplayRefused(404, f"No replay has the ID {attempt_id}.")
    return attempt


def replay_send(*, attempt_id: str, now: datetime) -> str:
    """Claim, send, record one attempt (see `replay.sending`); its state afterwards."""
    from replay.sending import replay_send_group

    return replay_send_group(attempt_ids=[attempt_id], now=now)[0]


def replay_outcome_record(*, attempt_id: str, outcome: transports.Outcome, now: datetime) -> str:
    from replay.sending import replay_outcomes_record

    states = replay_outcomes_record(outcomes={attempt_id: outcome}, now=now)
    if attempt_id not in states:
        raise ReplayRefused(404, f"No replay has the ID {attempt_id}.")
    return states[attempt_id]


def replay_confirm_delivered(
    *, attempt_id: str, actor: Actor, now: datetime, request: HttpRequest | None = None
) -> ReplayAttempt:
    """The operator checked the target: the in-doubt message did arrive."""
    with transaction.atomic():
        attempt = _attempt_locked(attempt_id)
        if attempt.state != ReplayAttempt.State.IN_DOUBT:
            raise ReplayRefused(
                409, f"Only an in-doubt replay can be confirmed; this one is {attempt.state}."
            )
        attempt.state, attempt.decided_at = ReplayAttempt.State.DELIVERED, now
        attempt.decided_by = actor if isinstance(actor, User) else None
        attempt.save(update_fields=["state", "decided_by", "decided_at"])
        dead_letter_moved(
            _dead_letter_locked(attempt.dead_letter_id), DeadLetter.State.REPLAYED, now
        )
        journal_append(actor=actor, action="replay.confirm_delivered", request=request,
                       subject=f"dead_letter:{attempt.dead_letter_id}", details={"attempt": attempt_id})  # fmt: skip
    return attempt


def replays_sweep(*, now: datetime) -> dict[str, int]:
    """Beat: a send that began and whose lease ran out may have arrived (in doubt, never
    resent); one whose lease ran out before its send began never left (back to the queue,
    sent again); a queued attempt whose task the broker lost is woken again (the claim keeps
    that safe)."""
    from replay.sending import replay_outcomes_record, replays_unstarted_requeue
    from replay.tasks import replay_send_group_task

    expired = ReplayAttempt.objects.filter(state=ReplayAttempt.State.SENDING, lease_until__lt=now)
    begun = list(expired.filter(sent_at__isnull=False).values_list("id", flat=True))
    stopped = transports.Outcome(
        "unknown", "the worker stopped while sending; the target may have received it"
    )
    replay_outcomes_record(outcomes={str(a): stopped for a in begun}, now=now, lease_expired=True)
    stuck = list(
        ReplayAttempt.objects.filter(
            state=ReplayAttempt.State.QUEUED, requested_at__lt=now - timedelta(seconds=30)
        ).values_list("id", flat=True)[:500]
    )
    for start in range(0, len(stuck), SEND_GROUP):
        replay_send_group_task.delay([str(a) for a in stuck[start : start + SEND_GROUP]])
    requeued = replays_unstarted_requeue(now=now)
    return {"in_doubt": len(begun), "woken": len(stuck), "requeued": len(requeued)}


def dead_letter_close(
    *, dead_letter_id: int, version_seen: int, state: str, reason: str, actor: Actor, now: datetime,
    request: HttpRequest | None = None,
) -> DeadLetter:  # fmt: skip
    """Resolve (dealt with outside Tideline) or discard (not to be sent), with a reason."""
    if not reason.strip():
        raise ReplayRefused(400, "Say why: a reason is required.")
    with transaction.atomic():
        dead_letter = _dead_letter_locked(dead_letter_id)
        if ReplayAttempt.objects.filter(dead_letter=dead_letter, state__in=OPEN_STATES).exists():
            raise ReplayRefused(
                409,
                "A replay of this dead letter is in progress.",
                dead_letter_current(dead_letter),
            )
        if version_seen != dead_letter.version:
            raise ReplayRefused(
                409, "The dead letter changed since you saw it.", dead_letter_current(dead_letter)
            )
        dead_letter_moved(dead_letter, state, now)
        journal_append(actor=actor, action=f"dead_letter.{'resolve' if state == 'resolved' else 'discard'}",
                       subject=f"dead_letter:{dead_letter.id}", details={"reason": reason}, request=request)  # fmt: skip
    return dead_letter
