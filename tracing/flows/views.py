"""The flow page: where a flow stopped, in words, and everything it is made of.

One view serves the page and, for htmx, its `flow` partial: while the flow runs the partial
polls every 5 s; once the flow is completed, failed or partial it answers 286 (stop polling).
Everything on it is read here from `flow_detail`; nothing recomputes the flow's status.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from console.access import Capability, capabilities_of
from console.htmx import HtmxHttpRequest
from tracing.alerts.selectors import incidents_for_flow
from tracing.flows.detail import flow_detail
from tracing.flows.masking import (
    payload_view_unmasked_journal,
)
from tracing.flows.models import FlowInstance
from tracing.flows.page import flow_page_read


@require_GET
def flow_page(request: HtmxHttpRequest, correlation_id: str) -> HttpResponse:
    polling = bool(request.htmx) and request.htmx.target == "flow"
    if polling and _unchanged(correlation_id, request.GET.get("version", "")):
        return HttpResponse(status=204)  # htmx swaps nothing: open <details> stay open
    detail = flow_detail(correlation_id, payloads=True)
    if detail is None:
        context = {"correlation_id": correlation_id}
        return render(request, "flows/not_found.html", context, status=404)
    now = timezone.now()
    unmasked = Capability.VIEW_UNMASKED in capabilities_of(request.user)
    page = flow_page_read(detail, unmasked=unmasked, now=now)
    page.incidents = incidents_for_flow(correlation_id)
    if unmasked and page.payloads_shown:
        payload_view_unmasked_journal(
            user=request.user, subject=f"flow:{correlation_id}",
            details={"correlation_id": correlation_id}, request=request, now=now,
        )  # fmt: skip
    if not polling:
        return render(request, "flows/flow.html", {"page": page})
    partial = render_to_string("flows/flow.html#flow", {"page": page}, request=request)
    return HttpResponseStopPolling(partial) if page.final else HttpResponse(partial)


def _unchanged(correlation_id: str, version: str) -> bool:
    """Has the flow summary stayed as the polling page last saw it?"""
    if "\x00" in correlation_id:
        return False
    updated = (
        FlowInstance.objects.filter(correlation_id=correlation_id)
        .values_list("updated_at", flat=True)
        .first()
    )
    return bool(version) and updated is not None and updated.isoformat() == version
