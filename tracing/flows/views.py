"""The flow page: where a flow stopped, in words, and everything it is made of."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from tracing.flows.models import FlowInstance


@require_GET
def flow_page(request: HttpRequest, correlation_id: str) -> HttpResponse:
    flow = get_object_or_404(
        FlowInstance.objects.select_related("definition"), correlation_id=correlation_id
    )
    return render(request, "flows/flow.html", {"flow": flow})
