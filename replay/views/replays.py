"""What an operator does with one dead letter: replay (or dry-run), resolve or discard,
approve or reject another's replay, confirm an in-doubt one delivered.

Every POST calls one service of `replay.services`, then redirects back to the dead letter
with a message, or shows it again with the refusal and its status (409, 403, 400), the
operator's input kept.
"""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from replay.models import ReplayAttempt
from replay.services import (
    ReplayOrder,
    ReplayRefused,
    dead_letter_close,
    replay_confirm_delivered,
    replay_decide,
    replay_preview,
    replay_request,
)
from replay.views.dead_letter import DryRun, detail_render, editable_text, verdict_words
from replay.views.forms import CloseForm, DecisionForm, ReplayForm
from tracing.flows.masking import DISPLAY_LIMIT
from tracing.ingest.models import DeadLetter

BODY_KEYS = ("body", "body_encoding", "size", "sha256")
KeptForm = TypeVar("KeptForm", ReplayForm, CloseForm)


def _back(request: HttpRequest, dead_letter_id: int, said: str) -> HttpResponse:
    messages.success(request, said)
    return redirect("dead-letter", dead_letter_id)


def _again(
    request: HttpRequest, dead_letter_id: int, refused: ReplayRefused, **live: Any
) -> HttpResponse:
    dead_letter = DeadLetter.objects.get(id=dead_letter_id)
    return detail_render(
        request, dead_letter, status=refused.status, refusal=refused.message, **live
    )


@require_POST
def dead_letter_replay_post(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, id=dead_letter_id)
    form = ReplayForm(request.POST)
    if not form.is_valid():
        return detail_render(
            request, dead_letter, status=400, replay_form=form, refusal="Check the replay form."
        )
    order = _order(dead_letter, form, request.POST)
    try:
        if form.cleaned_data["action"] == "dry_run":
            preview = _dry_run(replay_preview(order=order))
            return detail_render(request, dead_letter, replay_form=form, dry_run=preview)
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
        return detail_render(
            request, dead_letter, status=400, close_form=form, refusal="Check the form."
        )
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
