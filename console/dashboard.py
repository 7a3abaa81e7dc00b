"""The dashboard: what support and operators see first.

One view serves the page and, for the htmx window switcher, only its panels; plain links
do the same without JavaScript. `?definition=&step=` adds the list behind a funnel's
"not there yet".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from tracing.flows import dashboard as selectors
from tracing.ledger.selectors import verification_failed

LIST_LIMIT = 20
STUCK_LIMIT = 100


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    context = dashboard_context(request.GET, now=timezone.now())
    context["ledger_failure"] = verification_failed()
    if request.htmx and not context["empty"]:  # type: ignore[attr-defined]
        return render(request, "console/dashboard.html#panels", context)
    return render(request, "console/dashboard.html", context)


def dashboard_context(query: QueryDict, *, now: datetime) -> dict[str, Any]:
    window = selectors.dashboard_window(query.get("window", selectors.DEFAULT_WINDOW), now=now)
    attention = _attention()
    ingest = {
        "dead_letters": selectors.dead_letter_depth(),
        "senders": selectors.sender_rates(now=now),
    }
    if not selectors.flows_exist() and not any(attention.values()) and not any(ingest.values()):
        return {"empty": True}
    definitions = selectors.definitions_summary(window=window)
    return {
        "empty": False,
        "window": window,
        "windows": [selectors.dashboard_window(key, now=now) for key in selectors.WINDOW_KEYS],
        "definitions": definitions,
        "stuck": _stuck(query, definitions, window),
        "stuck_asked": bool(query.get("definition") and query.get("step")),
        "status_words": selectors.STATUS_WORDS,
        "dead_letter_states": selectors.DEAD_LETTER_STATE_WORDS,
        **attention,
        **ingest,
    }


def _attention() -> dict[str, Any]:
    def rows_or_none(shortlist: selectors.Shortlist[Any]) -> selectors.Shortlist[Any] | None:
        return shortlist if shortlist.total else None

    return {
        "stalled": rows_or_none(selectors.flows_in_trouble("stalled", limit=LIST_LIMIT)),
        "failed": rows_or_none(selectors.flows_in_trouble("failed", limit=LIST_LIMIT)),
        "missing": rows_or_none(selectors.missing_open(limit=LIST_LIMIT)),
    }


def _stuck(
    query: QueryDict, definitions: list[selectors.DefinitionSummary], window: selectors.Window
) -> selectors.Stuck | None:
    definition = next((d for d in definitions if d.name == query.get("definition")), None)
    if definition is None:
        return None
    return selectors.flows_stuck(
        definition, query.get("step", ""), window=window, limit=STUCK_LIMIT
    )
