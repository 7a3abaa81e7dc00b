"""Bulk replays in the console: the jobs, one job's progress, and starting one from the
dead-letter list's filter after seeing how many match and how many would be skipped.

Every change goes through replay.bulk's services, as /api/v1/bulk-replays does; the pages
only read and show. While a job may still send, its `progress` partial polls (every 1 s
while it runs) and answers 286 (htmx stops polling) once the job is done, cancelled or
rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from console.access import Capability, capabilities_of
from console.htmx import HtmxHttpRequest
from replay.bulk import (
    PREVIEW_CHECKED,
    Selection,
    bulk_replay_control,
    bulk_replay_counts,
    bulk_replay_create,
    bulk_replay_preview,
)
from replay.models import BulkReplay
from replay.selectors import failed_window
from replay.services import ReplayRefused
from replay.views.forms import BulkControlForm, BulkStartForm, DeadLetterFilter

JOBS_PAGE_SIZE = 25
FINISHED = {BulkReplay.State.DONE, BulkReplay.State.CANCELLED, BulkReplay.State.REJECTED}
# Which buttons a job shows in each state; the service decides what it allows.
CONTROLS: dict[str, tuple[str, ...]] = {
    BulkReplay.State.RUNNING: ("pause", "cancel"),
    BulkReplay.State.PAUSED: ("resume", "cancel"),
    BulkReplay.State.PENDING_APPROVAL: ("cancel",),
}
CONTROLLED = {
    "pause": "Paused: no new messages are taken until you resume.",
    "resume": "Resumed: the job takes messages again.",
    "cancel": "Cancelled: messages not yet sent never will be; their dead letters wait again.",
    "approve": "Approved: the job runs. Your approval covers every message it takes.",
    "reject": "Rejected: the job will send nothing.",
}
FILTER_FIELDS = ("system", "definition", "state", "error", "since", "until")


@dataclass(frozen=True)
class Progress:
    """The polled part of a job's page: its state, counts, bar and what this person may do."""

    job: BulkReplay
    counts: dict[str, int]
    finished_messages: int  # taken and settled: sent, failed, in doubt, skipped or cancelled
    percent: int
    live: bool  # the job may still change: the partial polls
    every: str  # how often it polls
    controls: tuple[str, ...]
    may_decide: bool  # waits for approval, and this operator did not start it
    awaits_other: bool  # waits for approval, and this operator started it
    refusal: str


def progress_of(job: BulkReplay, request: HttpRequest, refusal: str = "") -> Progress:
    counts = bulk_replay_counts(job)
    settled = counts["taken"] - counts["waiting"]
    if job.state == BulkReplay.State.DONE:
        percent = 100
    else:  # 100 % means done: a running job whose last sends are settling shows 99
        percent = min(99, settled * 100 // max(job.matched, 1))
    operator = Capability.OPERATE in capabilities_of(request.user)
    pending = job.state == BulkReplay.State.PENDING_APPROVAL
    own = job.requested_by_id is not None and job.requested_by_id == request.user.pk
    return Progress(
        job=job, counts=counts, finished_messages=settled, percent=percent,
        live=job.state not in FINISHED, every="1s" if job.state == BulkReplay.State.RUNNING else "5s",
        controls=CONTROLS.get(job.state, ()) if operator else (),
        may_decide=operator and pending and not own, awaits_other=operator and pending and own,
        refusal=refusal,
    )  # fmt: skip


def selection_words(stored: dict[str, Any]) -> list[tuple[str, str]]:
    """A job's filter as the operator would say it: (what, value) pairs."""
    selection = Selection.of(stored)
    said = [
        ("System", selection.system), ("Flow", selection.definition),
        ("State", selection.state.replace("_", " ")), ("Error contains", selection.error),
        ("Failed since", _clock(selection.since)), ("Failed before", _clock(selection.until)),
    ]  # fmt: skip
    return [(label, value) for label, value in said if value] or [("Filter", "every dead letter")]


def _clock(at: datetime | None) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S") if at else ""


@require_GET
def bulk_replays_page(request: HttpRequest) -> HttpResponse:
    jobs = BulkReplay.objects.select_related("requested_by", "decided_by").order_by("-created_at")
    rows = Paginator(jobs, JOBS_PAGE_SIZE).get_page(request.GET.get("page"))
    shown = [
        (job, bulk_replay_counts(job), selection_words(job.selection)) for job in rows.object_list
    ]
    return render(request, "replay/bulk_replays.html", {"rows": rows, "jobs": shown})


@require_GET
def bulk_replay_page(request: HtmxHttpRequest, bulk_id: UUID) -> HttpResponse:
    job = get_object_or_404(
        BulkReplay.objects.select_related("requested_by", "decided_by"), id=bulk_id
    )
    if request.htmx and request.htmx.target == "bulk-progress":
        progress = progress_of(job, request)
        partial = render_to_string(
            "replay/bulk_replay.html#progress", {"progress": progress}, request=request
        )
        return HttpResponse(partial) if progress.live else HttpResponseStopPolling(partial)
    return _job_page(request, job)


def _job_page(
    request: HttpRequest, job: BulkReplay, *, status: int = 200, refusal: str = ""
) -> HttpResponse:
    context = {
        "job": job, "progress": progress_of(job, request, refusal),
        "selection": selection_words(job.selection), "control_form": BulkControlForm(),
    }  # fmt: skip
    return render(request, "replay/bulk_replay.html", context, status=status)


@require_http_methods(["GET", "POST"])
def bulk_replay_new(request: HttpRequest) -> HttpResponse:
    """GET: the preview of the list's filter and the start form; POST: start the job."""
    if request.method == "POST":
        return _start(request)
    wanted = DeadLetterFilter(request.GET)
    if not wanted.is_valid():
        return _preview_page(request, status=400, filter_errors=wanted.errors)
    since, until = failed_window(wanted.cleaned_data, timezone.now())
    # Ages become times now: what starts is what the operator saw counted.
    fixed = {**{name: wanted.cleaned_data.get(name) or "" for name in FILTER_FIELDS[:4]},
             "since": since.isoformat() if since else "", "until": until.isoformat() if until else ""}  # fmt: skip
    return _preview_page(request, form=BulkStartForm(initial=fixed))


def _preview_page(
    request: HttpRequest, *, form: BulkStartForm | None = None, status: int = 200,
    refusal: str = "", filter_errors: Any = None,
) -> HttpResponse:  # fmt: skip
    context: dict[str, Any] = {"form": form, "refusal": refusal, "filter_errors": filter_errors}
    if form is not None:
        selection = _selection(form)
        context |= {
            "preview": bulk_replay_preview(selection=selection, include_stale=False),
            "selection": selection_words(selection.as_json()), "checked_at_most": PREVIEW_CHECKED,
            "list_query": _list_query(selection),
        }  # fmt: skip
    return render(request, "replay/bulk_replay_new.html", context, status=status)


def _selection(form: BulkStartForm) -> Selection:
    """The filter of a start form: as posted once valid, else as first previewed."""
    if form.is_bound:
        form.is_valid()  # cleaned_data holds the valid fields even when another one is not
    given = form.cleaned_data if form.is_bound else form.initial
    return Selection(
        system=given.get("system") or "", definition=given.get("definition") or "",
        state=given.get("state") or "", error=given.get("error") or "",
        since=_datetime(given.get("since")), until=_datetime(given.get("until")),
    )  # fmt: skip


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _list_query(selection: Selection) -> str:
    """The dead-letter list showing this selection, to go back and change the filter."""
    query = QueryDict(mutable=True)
    for name in FILTER_FIELDS[:4]:
        if getattr(selection, name):
            query[name] = getattr(selection, name)
    for name in ("since", "until"):
        at = getattr(selection, name)
        if at:
            query[name] = timezone.localtime(at).strftime("%Y-%m-%dT%H:%M")
    return query.urlencode()


def _start(request: HttpRequest) -> HttpResponse:
    form = BulkStartForm(request.POST)
    if not form.is_valid():
        if any(name in form.errors for name in FILTER_FIELDS):
            return _preview_page(request, status=400, filter_errors=form.errors)
        return _preview_page(request, form=form, status=400, refusal="Check the start form.")
    given = form.cleaned_data
    try:
        job = bulk_replay_create(
            selection=_selection(form), rate_per_second=given["rate_per_second"],
            include_stale=given["include_stale"], reason=given["reason"], actor=request.user,
            now=timezone.now(), request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        return _preview_page(request, form=form, status=refused.status, refusal=refused.message)
    if job.state == BulkReplay.State.PENDING_APPROVAL:
        messages.success(request, "Bulk replay created. It waits for another operator's approval.")
    else:
        messages.success(request, "Bulk replay started.")
    return redirect("bulk-replay", job.id)


@require_POST
def bulk_replay_control_post(request: HttpRequest, bulk_id: UUID, action: str) -> HttpResponse:
    job = get_object_or_404(BulkReplay, id=bulk_id)
    form = BulkControlForm(request.POST)
    if not form.is_valid():
        return _job_page(request, job, status=400, refusal="The reason is too long.")
    try:
        bulk_replay_control(
            job_id=str(bulk_id), action=action, actor=request.user, now=timezone.now(),
            reason=form.cleaned_data["reason"], request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        job.refresh_from_db()
        return _job_page(request, job, status=refused.status, refusal=refused.message)
    messages.success(request, CONTROLLED[action])
    return redirect("bulk-replay", bulk_id)
