"""One dead letter: its payload, headers, deaths, replays and trail.

While a replay is queued or sending, the `replays` partial polls every 2 s and answers 286
(stop polling) once none is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from console.access import Capability, capabilities_of
from console.htmx import HtmxHttpRequest
from console.models import JournalEntry
from replay.models import OPEN_STATES, ReplayAttempt
from replay.payloads import payload_diff
from replay.services import CLOSED_STATES
from replay.transports.common import without_password
from replay.views.forms import CloseForm, ReplayForm
from tracing.flows.masking import (
    UNMASKED_VIEW,
    headers_shown,
    payload_shown,
    payload_view_unmasked_journal,
)
from tracing.ingest.models import DeadLetter

# A payload up to this size, in UTF-8, can be repaired in the page; larger ones through the API.
EDITABLE_BYTES = 256 * 1024
FOLLOWED_STATES = (ReplayAttempt.State.QUEUED, ReplayAttempt.State.SENDING)
PROBLEMS = {"already_delivered": "Already delivered", "stale": "Stale", "poison": "Poison"}
# What the dead letter's trail shows of the journal, in words, newest first.
TRAIL = {
    "replay.request": "asked for a replay", "replay.approve": "approved the replay",
    "replay.reject": "rejected the replay", "replay.send": "took the replay to send",
    "replay.requeue": "returned the replay to the queue", "replay.outcome": "recorded what became of the replay",
    "replay.confirm_delivered": "confirmed the replay arrived", "dead_letter.resolve": "resolved it",
    "dead_letter.discard": "discarded it", UNMASKED_VIEW: "saw the payload as sent",
}  # fmt: skip
TRAIL_DETAILS = ("state", "reason", "detail", "address")
TRAIL_LENGTH = 100
Verdict = list[tuple[str, str, str]]  # (label, words, tone)


@dataclass(frozen=True)
class AttemptShown:
    attempt: ReplayAttempt
    verdict: Verdict
    diff: list[tuple[str, str]]  # (kind, line) of the repair against the stored payload
    may_decide: bool  # waits for approval, and this operator did not ask for it
    awaits_other: bool  # waits for approval, and this operator asked for it
    may_confirm: bool  # in doubt: the operator may confirm it arrived


@dataclass(frozen=True)
class TrailEntry:
    at: datetime
    actor: str
    words: str
    details: str


@dataclass(frozen=True)
class DryRun:
    facts: list[tuple[str, str]]
    tables: list[tuple[str, dict[str, Any]]]
    body: str
    body_note: str
    verdict: Verdict


@dataclass(frozen=True)
class Live:
    """The part of the detail that follows a replay: state, attempts, the operator's forms."""

    attempts: list[AttemptShown]
    operator: bool
    following: bool  # an attempt is queued or sending: the partial polls
    may_act: bool  # an operator, the dead letter open and no replay under way
    editable: bool  # the payload is text small enough to repair in the form
    replay_form: ReplayForm
    close_form: CloseForm
    dry_run: DryRun | None
    refusal: str
    trail: list[TrailEntry]


def verdict_words(verdict: dict[str, Any]) -> Verdict:
    said = [
        (label, str(verdict[key]), "bad") for key, label in PROBLEMS.items() if verdict.get(key)
    ]
    if verdict.get("side_effects"):
        said.append(("Side effects", str(verdict["side_effects"]), "neutral"))
    if verdict.get("needs_approval"):
        said.append(("Needs approval", "; ".join(verdict["needs_approval"]), "neutral"))
    return said or [("Safe", "the target deduplicates by Idempotency-Key", "good")]


@require_GET
def dead_letter_page(request: HtmxHttpRequest, dead_letter_id: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, id=dead_letter_id)
    if request.htmx and request.htmx.target == "replays":
        live = _live(request, dead_letter)
        context = {"letter": dead_letter, "live": live, "now": timezone.now()}
        partial = render_to_string("replay/dead_letter.html#replays", context, request=request)
        return HttpResponse(partial) if live.following else HttpResponseStopPolling(partial)
    return detail_render(request, dead_letter)


def detail_render(
    request: HttpRequest, dead_letter: DeadLetter, *, status: int = 200, **live: Any
) -> HttpResponse:
    now = timezone.now()
    unmasked = Capability.VIEW_UNMASKED in capabilities_of(request.user)
    payload = payload_shown(bytes(dead_letter.payload), dead_letter.content_type, unmasked=unmasked)
    if unmasked:
        payload_view_unmasked_journal(
            user=request.user, subject=f"dead_letter:{dead_letter.id}",
            details={"dead_letter": dead_letter.id}, request=request, now=now,
        )  # fmt: skip
    context = {
        "letter": dead_letter, "live": _live(request, dead_letter, **live), "now": now,
        "unmasked": unmasked, "payload": payload,
        "headers": headers_shown(dead_letter.headers, unmasked=unmasked),
        "destination": _destination(dead_letter), "deaths": _deaths(dead_letter),
    }  # fmt: skip
    return render(request, "replay/dead_letter.html", context, status=status)


def _live(
    request: HttpRequest, dead_letter: DeadLetter, *, refusal: str = "",
    replay_form: ReplayForm | None = None, close_form: CloseForm | None = None,
    dry_run: DryRun | None = None,
) -> Live:  # fmt: skip
    operator = Capability.OPERATE in capabilities_of(request.user)
    closed = dead_letter.state in CLOSED_STATES
    attempts = list(
        ReplayAttempt.objects.filter(dead_letter=dead_letter)
        .select_related("requested_by", "decided_by")
        .defer("payload")
        .order_by("-requested_at")
    )
    text = editable_text(dead_letter)
    initial = {"version": dead_letter.version}
    return Live(
        attempts=[_attempt_shown(a, dead_letter, request, operator, closed) for a in attempts],
        operator=operator, following=any(a.state in FOLLOWED_STATES for a in attempts),
        may_act=operator and not closed and not any(a.state in OPEN_STATES for a in attempts),
        editable=text is not None, replay_form=replay_form or ReplayForm(initial={**initial, "payload": text}),
        close_form=close_form or CloseForm(initial=initial), dry_run=dry_run, refusal=refusal,
        trail=_trail(dead_letter),
    )  # fmt: skip


def _attempt_shown(
    attempt: ReplayAttempt, dead_letter: DeadLetter, request: HttpRequest, operator: bool,
    closed: bool,
) -> AttemptShown:  # fmt: skip
    pending = attempt.state == ReplayAttempt.State.PENDING_APPROVAL
    own = attempt.requested_by_id is not None and attempt.requested_by_id == request.user.pk
    return AttemptShown(
        attempt=attempt, verdict=verdict_words(attempt.verdict),
        diff=_repair_diff(attempt, dead_letter) if _sees_payloads(request) else [],
        may_decide=operator and pending and not own, awaits_other=pending and own,
        may_confirm=operator and not closed and attempt.state == ReplayAttempt.State.IN_DOUBT,
    )  # fmt: skip


def _sees_payloads(request: HttpRequest) -> bool:
    # A diff shows payload lines: only for roles that see payloads unmasked.
    return Capability.VIEW_UNMASKED in capabilities_of(request.user)


def _repair_diff(attempt: ReplayAttempt, dead_letter: DeadLetter) -> list[tuple[str, str]]:
    if not attempt.repaired:
        return []
    stored, sent = bytes(dead_letter.payload), bytes(attempt.payload)
    if max(len(stored), len(sent)) > EDITABLE_BYTES:
        return [("same", f"the repaired payload ({len(sent):,} bytes) is too large to diff here")]
    kinds = {"+": "added", "-": "removed", "@": "hunk"}
    return [
        ("file" if line.startswith(("+++", "---")) else kinds.get(line[:1], "same"), line)
        for line in payload_diff(stored, sent).splitlines()
    ]


def _trail(dead_letter: DeadLetter) -> list[TrailEntry]:
    """Who did what to this dead letter, from the journal."""
    entries = JournalEntry.objects.filter(
        action__in=TRAIL, subject=f"dead_letter:{dead_letter.id}"
    ).order_by("-at", "-id")[:TRAIL_LENGTH]
    return [
        TrailEntry(
            entry.at, entry.actor or "Tideline", TRAIL[entry.action], _details(entry.details)
        )
        for entry in entries
    ]


def _details(details: dict[str, Any]) -> str:
    said = [
        f"{key} {str(details[key]).replace('_', ' ')}" for key in TRAIL_DETAILS if details.get(key)
    ]
    return " · ".join(said)


def editable_text(dead_letter: DeadLetter) -> str | None:
    """The stored payload as text the operator may repair, or None (binary or too large)."""
    payload = bytes(dead_letter.payload)
    if len(payload) > EDITABLE_BYTES:
        return None
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return None


def _destination(dead_letter: DeadLetter) -> list[tuple[str, str]]:
    fields = [(name, str(value)) for name, value in dead_letter.destination.items()]
    return [("transport", dead_letter.transport)] + [
        (name, without_password(value) if name == "url" else value) for name, value in fields
    ]


def _deaths(dead_letter: DeadLetter) -> list[dict[str, Any]]:
    """The dead letter's deaths, newest first, with times as times."""
    return [
        {**death, "failed_at": parse_datetime(death.get("failed_at") or "")}
        for death in reversed(dead_letter.history)
    ]
