"""Flow definitions in the console: admins see every definition, import YAML, export it (alert
rules included, under `alerts:`).

The same import service as `manage.py flows import`: the whole file or nothing, every
problem named by line and field.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from tracing.flows.documents import DefinitionsInvalid
from tracing.flows.expectations import duration_words
from tracing.flows.models import FlowDefinition
from tracing.flows.services import (
    ImportedDefinitions,
    flow_definitions_export,
    flow_definitions_import,
)

MAX_DOCUMENT_BYTES = 1_000_000


class DefinitionsForm(forms.Form):
    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false"}),
        required=False,
        help_text="Owners, systems, calendars, flows and alerts in YAML, as `flows export` writes them.",
    )
    file = forms.FileField(required=False, help_text="Or upload a .yaml file.")

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        upload = cleaned.get("file")
        if upload is not None:
            if upload.size > MAX_DOCUMENT_BYTES:
                raise forms.ValidationError("The file is larger than 1 MB.")
            try:
                cleaned["document"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        if not cleaned.get("document", "").strip():
            raise forms.ValidationError("Paste a YAML document or choose a file.")
        return cleaned


@require_http_methods(["GET", "POST"])
def flow_definitions(request: HttpRequest) -> HttpResponse:
    form = DefinitionsForm(request.POST or None, request.FILES or None)
    problems: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            imported = flow_definitions_import(
                text=form.cleaned_data["document"], actor=request.user
            )
        except DefinitionsInvalid as invalid:
            problems = [str(problem) for problem in invalid.problems]
        else:
            messages.success(request, _imported_words(imported))
            return redirect("flow-definitions")
    definitions = (
        FlowDefinition.objects.filter(is_current=True)
        .select_related("owner")
        .prefetch_related("steps__system")
        .order_by("name")
    )
    status = 400 if problems else 200
    rows = [(definition, _schedule_words(definition)) for definition in definitions]
    context = {"form": form, "problems": problems, "rows": rows}
    return render(request, "flows/definitions.html", context, status=status)


def _imported_words(imported: ImportedDefinitions) -> str:
    created = ", ".join(imported.created) or "nothing new"
    words = f"Imported: {created}. Unchanged: {len(imported.unchanged)}."
    rules = imported.rules
    if rules.created or rules.changed or rules.unchanged:
        words += (
            f" Alert rules: {len(rules.created)} created, {len(rules.changed)} changed, "
            f"{len(rules.unchanged)} unchanged."
        )
    return words


def _schedule_words(definition: FlowDefinition) -> str:
    grace = (
        f", grace {duration_words(definition.grace_seconds)}" if definition.grace_seconds else ""
    )
    if definition.every_seconds:
        return f"every {duration_words(definition.every_seconds)}{grace}"
    if definition.cron:
        return f"cron {definition.cron}{grace}"
    return ""


@require_GET
def flow_definitions_download(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(flow_definitions_export(), content_type="application/yaml")
    response["Content-Disposition"] = 'attachment; filename="flows.yaml"'
    return response
