"""The dead-letter list: filtered (the shared filter of replay.selectors), counted by state."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.access import Capability, capabilities_of
from console.htmx import HtmxHttpRequest
from replay.selectors import dead_letters_matching
from replay.views.forms import AGE_SUGGESTIONS, DeadLetterFilter
from tracing.ingest.models import DeadLetter

PAGE_SIZE = 50
# Columns the list never shows: a payload may be megabytes.
HEAVY_COLUMNS = ("payload", "headers", "properties", "history", "destination")


@require_GET
def dead_letters_page(request: HtmxHttpRequest) -> HttpResponse:
    form = DeadLetterFilter(request.GET)
    form.is_valid()  # a field that is not valid filters nothing and says why
    wanted = form.cleaned_data
    letters = dead_letters_matching(wanted).defer(*HEAVY_COLUMNS).order_by("-last_failed_at", "-id")
    context = {
        "form": form, "rows": Paginator(letters, PAGE_SIZE).get_page(request.GET.get("page")),
        "counts": _state_counts(dead_letters_matching({**wanted, "state": ""})),
        "state": wanted.get("state", ""), "now": timezone.now(), "age_suggestions": AGE_SUGGESTIONS,
        "may_operate": Capability.OPERATE in capabilities_of(request.user),
    }  # fmt: skip
    template = "replay/dead_letters.html"
    return render(request, f"{template}#listing" if request.htmx else template, context)


def _state_counts(letters: QuerySet[DeadLetter]) -> list[tuple[str, int]]:
    counted = dict(letters.order_by().values_list("state").annotate(count=Count("id")))
    return [(state, counted.get(state, 0)) for state in DeadLetter.State.values]
