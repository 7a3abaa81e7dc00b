"""/ledger/: the log's entries, its checkpoints and witnesses, the last verification, the
public key an auditor pins, and export bundles — asked for, followed, downloaded.

The exports part polls every 2 s while a job is queued or running and answers 286 (htmx
stops polling) once none is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from console.htmx import HtmxHttpRequest
from console.services import journal_append
from tracing.ledger import selectors
from tracing.ledger.export import (
    ExportFilters,
    ExportForbidden,
    ExportRefused,
    ledger_export_request,
)
from tracing.ledger.models import Checkpoint, Entry, ExportJob, Kind, VerificationRun
from tracing.ledger.note import SigningKey
from tracing.ledger.signing import signing_key

ENTRIES_SHOWN = 50
CHECKPOINTS_SHOWN = 20
EXPORTS_SHOWN = 20
POLL_EVERY = "2s"


class EntryFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "any"), *Kind.choices], required=False)
    system = forms.CharField(max_length=50, required=False)
    correlation_id = forms.CharField(max_length=200, required=False, label="Correlation ID")
    since = forms.DateTimeField(required=False, label="From")
    until = forms.DateTimeField(required=False, label="Before")
    before = forms.IntegerField(min_value=0, required=False, widget=forms.HiddenInput)


class ExportForm(forms.Form):
    since = forms.DateTimeField(required=False, label="Entries from")
    until = forms.DateTimeField(required=False, label="Entries before")
    system = forms.CharField(max_length=50, required=False, label="Highlight system")
    correlation_id = forms.CharField(
        max_length=200, required=False, label="Highlight correlation ID"
    )
    prior = forms.FileField(required=False, label="Checkpoint from an earlier export (optional)")

    def prior_text(self) -> str:
        upload = self.cleaned_data.get("prior")
        if not upload:
            return ""
        if upload.size > 10_000:
            raise ExportRefused("The prior checkpoint is too large to be a checkpoint.")
        try:
            return str(upload.read().decode("utf-8"))
        except UnicodeDecodeError:
            raise ExportRefused("The prior checkpoint is not UTF-8 text.") from None


def _entries(form: EntryFilterForm) -> QuerySet[Entry]:
    rows = Entry.objects.defer("body", "leaf_hash").order_by("-index")
    if not form.is_valid():
        return rows
    found = form.cleaned_data
    if found["kind"]:
        rows = rows.filter(kind=found["kind"])
    if found["system"]:
        rows = rows.filter(system=found["system"])
    if found["correlation_id"]:
        rows = rows.filter(correlation_id=found["correlation_id"])
    if found["since"]:
        rows = rows.filter(at__gte=found["since"])
    if found["until"]:
        rows = rows.filter(at__lt=found["until"])
    if found["before"] is not None:
        rows = rows.filter(index__lt=found["before"])
    return rows


def _exports() -> list[ExportJob]:
    return list(
        ExportJob.objects.select_related("checkpoint").order_by("-created_at", "-id")[
            :EXPORTS_SHOWN
        ]
    )


def _exports_context(jobs: list[ExportJob]) -> dict[str, Any]:
    return {"jobs": jobs, "live": any(job.live for job in jobs), "every": POLL_EVERY}


def _page_context(request: HttpRequest, export_form: ExportForm) -> dict[str, Any]:
    entry_form = EntryFilterForm(request.GET or None)
    entries = list(_entries(entry_form)[: ENTRIES_SHOWN + 1])
    older = entries[ENTRIES_SHOWN].index + 1 if len(entries) > ENTRIES_SHOWN else None
    latest = selectors.checkpoint_latest()
    key = _key_or_none()
    query = request.GET.copy()
    if older is not None:
        query["before"] = str(older)
    return {
        "entry_form": entry_form, "entries": entries[:ENTRIES_SHOWN], "older_query": query.urlencode() if older else "",
        "checkpoints": Checkpoint.objects.order_by("-size", "-id")[:CHECKPOINTS_SHOWN],
        "latest": latest, "witnessed": list(latest.witnessed.order_by("id")) if latest else [],
        "verification": VerificationRun.objects.filter(ok__isnull=False).order_by("-id").first(),
        "tree_size": selectors.tree_size(), "verifier_key": key.verifier_key if key else "",
        "fingerprint": key.fingerprint if key else "", "export_form": export_form,
        "exports": _exports_context(_exports()),
    }  # fmt: skip


def _key_or_none() -> SigningKey | None:
    """The page still shows the log when no signing key is configured; it says so instead."""
    try:
        return signing_key()
    except ImproperlyConfigured:
        return None


@require_GET
def ledger_page(request: HtmxHttpRequest) -> HttpResponse:
    if request.htmx and request.htmx.target == "exports":
        return ledger_exports_part(request)
    return render(request, "ledger/ledger.html", _page_context(request, ExportForm()))


def ledger_exports_part(request: HttpRequest) -> HttpResponse:
    context = _exports_context(_exports())
    partial = render_to_string("ledger/ledger.html#exports", {"exports": context}, request=request)
    return HttpResponse(partial) if context["live"] else HttpResponseStopPolling(partial)


@require_POST
def ledger_export_new(request: HttpRequest) -> HttpResponse:
    form = ExportForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            job = _export_requested(request, form)
        except ExportForbidden as forbidden:
            return render(request, "403.html", {"reason": str(forbidden)}, status=403)
        except ExportRefused as refused:
            form.add_error(None, str(refused))
        else:
            messages.success(
                request, f"Export {job.pk} queued: entries {job.begin} to {job.end - 1}."
            )
            return redirect("ledger")
    return render(request, "ledger/ledger.html", _page_context(request, form), status=400)


def _export_requested(request: HttpRequest, form: ExportForm) -> ExportJob:
    from tracing.ledger.tasks import ledger_export_task

    found = form.cleaned_data
    filters = ExportFilters(
        since=found["since"], until=found["until"], system=found["system"].strip(),
        correlation_id=found["correlation_id"].strip(), prior_checkpoint=form.prior_text(),
    )  # fmt: skip
    with transaction.atomic():
        job = ledger_export_request(user=request.user, filters=filters, now=timezone.now())  # type: ignore[arg-type]
        transaction.on_commit(lambda: ledger_export_task.delay(job.pk))
    return job


@require_GET
def ledger_export_download(request: HttpRequest, job_id: int) -> FileResponse:
    job = get_object_or_404(ExportJob, id=job_id, state=ExportJob.State.DONE)
    export_dir = Path(settings.TIDELINE_EXPORT_DIR).resolve()
    path = (export_dir / job.file).resolve()
    if not job.file or not path.is_relative_to(export_dir) or not path.is_file():
        raise Http404("This bundle is no longer on the server.")
    journal_append(
        actor=request.user, action="ledger.export.download", subject=f"ledger_export:{job.pk}",
        details={"bytes": job.bytes}, request=request,
    )  # fmt: skip
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)
