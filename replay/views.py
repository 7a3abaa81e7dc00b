"""The dead-letter console: the list, one dead letter, and what an operator does with it.

Pages only read; every POST calls one service of `replay.services`, then redirects back to
the dead letter with a message, or shows it again with the refusal and its status (409,
403, 400), the operator's input kept. While a replay is queued or sending, the detail's
`replays` partial polls every 2 s and answers 286 (stop polling) once none is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from console.access import Capability, capabilities_of
from console.htmx import HtmxHttpRequest
from console.models import JournalEntry
from console.services import journal_append
from replay.models import OPEN_STATES, ReplayAttempt
from replay.payloads import payload_diff
from replay.selectors import dead_letters_matching
from replay.services import (
    CLOSED_STATES,
    ReplayOrder,
    ReplayRefused,
    dead_letter_close,
    replay_confirm_delivered,
    replay_decide,
    replay_preview,
    replay_request,
)
from replay.transports.common import without_password
from tracing.flows.masking import (
    DISPLAY_LIMIT,
    UNMASKED_VIEW,
    UNMASKED_VIEW_EVERY,
    headers_shown,
    payload_shown,
)
from tracing.flows.models import FlowDefinition
from tracing.ingest.models import DeadLetter

PAGE_SIZE = 50
# A payload up to this size, in UTF-8, can be repaired in the page; larger ones through the API.
EDITABLE_BYTES = 256 * 1024
FOLLOWED_STATES = (ReplayAttempt.State.QUEUED, ReplayAttempt.State.SENDING)
PROBLEMS = {"already_delivered": "Already delivered", "stale": "Stale", "poison": "Poison"}
BODY_KEYS = ("body", "body_encoding", "size", "sha256")
# What the dead letter's trail shows of the journal, in words, newest first.
TRAIL = {
    "replay.request": "asked for a replay", "replay.approve": "approved the replay",
    "replay.reject": "rejected the replay", "replay.send": "began sending the replay",
    "replay.outcome": "recorded what became of the replay",
    "replay.confirm_delivered": "confirmed the replay arrived", "dead_letter.resolve": "resolved it",
    "dead_letter.discard": "discarded it", UNMASKED_VIEW: "saw the payload as sent",
}  # fmt: skip
TRAIL_DETAILS = ("state", "reason", "detail", "address")
TRAIL_LENGTH = 100
# Columns the list never shows: a payload may be megabytes.
HEAVY_COLUMNS = ("payload", "headers", "properties", "history", "destination")


class DeadLetterFilter(forms.Form):
    system = forms.ChoiceField(required=False)
    definition = forms.ChoiceField(required=False, label="Flow")
    state = forms.ChoiceField(
        required=False,
        choices=[("", "any state"), *((state, state.replace("_", " ")) for state in DeadLetter.State.values)],
    )  # fmt: skip
    error = forms.CharField(required=False, max_length=200, label="Error text")
    since = forms.DateTimeField(
        required=False, label="Failed since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        systems = DeadLetter.objects.order_by("system").values_list("system", flat=True).distinct()
        flows = FlowDefinition.objects.filter(is_current=True).order_by("title")
        cast(forms.ChoiceField, self.fields["system"]).choices = [
            ("", "any system"), *((system, system) for system in systems)
        ]  # fmt: skip
        cast(forms.ChoiceField, self.fields["definition"]).choices = [
            ("", "any flow"), *flows.values_list("name", "title")
        ]  # fmt: skip


class ReplayForm(forms.Form):
    version = forms.IntegerField()
    payload = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False, max_length=2000)
    confirm_stale = forms.BooleanField(required=False)
    action = forms.ChoiceField(
        required=False, choices=[("replay", "Replay"), ("dry_run", "Dry run")]
    )


class CloseForm(forms.Form):
    version = forms.IntegerField()
    action = forms.ChoiceField(choices=[("resolve", "Resolve"), ("discard", "Discard")])
    # Required by the service, which says so in words the page shows.
    reason = forms.CharField(required=False, max_length=2000)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=2000)


Verdict = list[tuple[str, str, str]]  # (label, words, tone)
KeptForm = TypeVar("KeptForm", ReplayForm, CloseForm)


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
def dead_letters_page(request: HtmxHttpRequest) -> HttpResponse:
    form = DeadLetterFilter(request.GET)
    form.is_valid()  # a field that is not valid filters nothing and says why
    wanted = form.cleaned_data
    letters = dead_letters_matching(wanted).defer(*HEAVY_COLUMNS).order_by("-last_failed_at", "-id")
    context = {
        "form": form, "rows": Paginator(letters, PAGE_SIZE).get_page(request.GET.get("page")),
        "counts": _state_counts(dead_letters_matching({**wanted, "state": ""})),
        "state": wanted.get("state", ""), "now": timezone.now(),
    }  # fmt: skip
    template = "replay/dead_letters.html"
    return render(request, f"{template}#listing" if request.htmx else template, context)


def _state_counts(letters: QuerySet[DeadLetter]) -> list[tuple[str, int]]:
    counted = dict(letters.order_by().values_list("state").annotate(count=Count("id")))
    return [(state, counted.get(state, 0)) for state in DeadLetter.State.values]


@require_GET
def dead_letter_page(request: HtmxHttpRequest, dead_letter_id: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, id=dead_letter_id)
    if request.htmx and request.htmx.target == "replays":
        live = _live(request, dead_letter)
        context = {"letter": dead_letter, "live": live, "now": timezone.now()}
        partial = render_to_string("replay/dead_letter.html#replays", context, request=request)
        return HttpResponse(partial) if live.following else HttpResponseStopPolling(partial)
    return _detail(request, dead_letter)


def _detail(
    request: HttpRequest, dead_letter: DeadLetter, *, status: int = 200, **live: Any
) -> HttpResponse:
    now = timezone.now()
    unmasked = Capability.VIEW_UNMASKED in capabilities_of(request.user)
    payload = payload_shown(bytes(dead_letter.payload), dead_letter.content_type, unmasked=unmasked)
    if unmasked:
        _unmasked_view_journal(request, dead_letter, now)
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


def _unmasked_view_journal(request: HttpRequest, dead_letter: DeadLetter, now: datetime) -> None:
    """Journal that this person saw the payload as sent, once an hour, as the flow page does.

    The advisory lock makes two tabs opened at once journal one view, not two.
    """
    subject = f"dead_letter:{dead_letter.id}"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                [f"{UNMASKED_VIEW}|{request.user.pk}|{subject}"],
            )
        seen = JournalEntry.objects.filter(
            action=UNMASKED_VIEW, subject=subject, actor_id=request.user.pk,
            at__gt=now - UNMASKED_VIEW_EVERY,
        ).exists()  # fmt: skip
        if not seen:
            journal_append(actor=request.user, action=UNMASKED_VIEW, subject=subject,
                           details={"dead_letter": dead_letter.id}, request=request)  # fmt: skip


def _back(request: HttpRequest, dead_letter_id: int, said: str) -> HttpResponse:
    messages.success(request, said)
    return redirect("dead-letter", dead_letter_id)


def _again(
    request: HttpRequest, dead_letter_id: int, refused: ReplayRefused, **live: Any
) -> HttpResponse:
    dead_letter = DeadLetter.objects.get(id=dead_letter_id)
    return _detail(request, dead_letter, status=refused.status, refusal=refused.message, **live)


@require_POST
def dead_letter_replay_post(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, id=dead_letter_id)
    form = ReplayForm(request.POST)
    if not form.is_valid():
        return _detail(
            request, dead_letter, status=400, replay_form=form, refusal="Check the replay form."
        )
    order = _order(dead_letter, form, request.POST)
    try:
        if form.cleaned_data["action"] == "dry_run":
            preview = _dry_run(replay_preview(order=order))
            return _detail(request, dead_letter, replay_form=form, dry_run=preview)
        attempt = replay_request(
            order=order, actor=request.user, now=timezone.now(), request=request
        )
    except ReplayRefused as refused:
        return _again(request, dead_letter_id, refused, replay_form=_kept(form, dead_letter_id))
    return _back(request, dead_letter_id, _requested_words(attempt))


def _order(dead_letter: DeadLetter, form: ReplayForm, posted: QueryDict) -> ReplayOrder:
    given = form.cleaned_data
    repair = _repair(dead_letter, given["payload"]) if "payload" in posted else None
    return ReplayOrder(
        dead_letter_id=dead_letter.id, version_seen=given["version"], payload=repair,
        reason=given["reason"], confirm_stale=given["confirm_stale"],
    )  # fmt: skip


def _repair(dead_letter: DeadLetter, text: str) -> bytes | None:
    """The operator's repair, or None when the form still holds the stored payload.

    Browsers send a textarea's line breaks as CRLF: they become the stored payload's own.
    """
    stored = editable_text(dead_letter)
    if stored is None:
        return None  # the page offered no editing: the stored bytes are sent
    text = text.replace("\r\n", "\n")
    if "\r\n" in stored:
        text = text.replace("\n", "\r\n")
    return None if text == stored else text.encode()


def _kept(form: KeptForm, dead_letter_id: int) -> KeptForm:
    """The operator's input, shown again with the version of the dead letter they now see."""
    version = DeadLetter.objects.values_list("version", flat=True).get(id=dead_letter_id)
    return type(form)({**dict(form.data.items()), "version": version})


def _dry_run(preview: dict[str, Any]) -> DryRun:
    sent = preview["request"]
    note = f"{sent['size']:,} bytes as {sent['body_encoding']}, sha256 {sent['sha256']}"
    body = sent["body"]
    if len(body) > DISPLAY_LIMIT:
        body, note = body[:DISPLAY_LIMIT], f"{note}; the first {DISPLAY_LIMIT:,} characters shown"
    return DryRun(
        facts=[(name.replace("_", " "), str(value)) for name, value in sent.items()
               if name not in BODY_KEYS and not isinstance(value, dict)],
        tables=[(name, value) for name, value in sent.items() if isinstance(value, dict)],
        body=body, body_note=note, verdict=verdict_words(preview["verdict"]),
    )  # fmt: skip


def _requested_words(attempt: ReplayAttempt) -> str:
    if attempt.state == ReplayAttempt.State.PENDING_APPROVAL:
        reasons = "; ".join(attempt.verdict["needs_approval"])
        return f"Replay requested. It waits for another operator's approval ({reasons})."
    return "Replay requested. It is queued and will be sent once."


@require_POST
def dead_letter_close_post(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, id=dead_letter_id)
    form = CloseForm(request.POST)
    if not form.is_valid():
        return _detail(request, dead_letter, status=400, close_form=form, refusal="Check the form.")
    resolve = form.cleaned_data["action"] == "resolve"
    try:
        dead_letter_close(
            dead_letter_id=dead_letter_id, version_seen=form.cleaned_data["version"],
            state=DeadLetter.State.RESOLVED if resolve else DeadLetter.State.DISCARDED,
            reason=form.cleaned_data["reason"], actor=request.user, now=timezone.now(), request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        return _again(request, dead_letter_id, refused, close_form=_kept(form, dead_letter_id))
    said = (
        "Resolved: dealt with outside Tideline." if resolve else "Discarded: it will not be sent."
    )
    return _back(request, dead_letter_id, said)


@require_POST
def replay_decide_post(request: HttpRequest, replay_id: UUID) -> HttpResponse:
    attempt = get_object_or_404(ReplayAttempt.objects.only("dead_letter_id"), id=replay_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        refused = ReplayRefused(400, "Approve or reject: say which.")
        return _again(request, attempt.dead_letter_id, refused)
    approve = form.cleaned_data["decision"] == "approve"
    try:
        replay_decide(
            attempt_id=str(replay_id), approve=approve, actor=request.user,
            reason=form.cleaned_data["reason"], now=timezone.now(), request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        return _again(request, attempt.dead_letter_id, refused)
    said = (
        "Approved: the replay is queued." if approve else "Rejected: the replay will not be sent."
    )
    return _back(request, attempt.dead_letter_id, said)


@require_POST
def replay_confirm_post(request: HttpRequest, replay_id: UUID) -> HttpResponse:
    attempt = get_object_or_404(ReplayAttempt.objects.only("dead_letter_id"), id=replay_id)
    try:
        replay_confirm_delivered(
            attempt_id=str(replay_id), actor=request.user, now=timezone.now(), request=request
        )
    except ReplayRefused as refused:
        return _again(request, attempt.dead_letter_id, refused)
    return _back(request, attempt.dead_letter_id, "Confirmed: the replay reached the target.")
