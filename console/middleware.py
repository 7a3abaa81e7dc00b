"""Request logging and the access rules for pages."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.views import APIView

from console.access import Open, metrics_allowed, rule_for, user_may
from console.metrics import HTTP_DURATION, HTTP_REQUESTS

request_log = logging.getLogger("tideline.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestLogMiddleware:
    """One JSON line per request: id, user, method, path, status, duration. No query, no headers."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        sent_id = request.headers.get("X-Request-ID", "")
        request.request_id = sent_id if _REQUEST_ID.match(sent_id) else uuid.uuid4().hex  # type: ignore[attr-defined]
        response = self.get_response(request)
        duration = time.perf_counter() - started
        user = getattr(request, "user", None)
        request_log.info(
            "request",
            extra={
                "request_id": request.request_id,  # type: ignore[attr-defined]
                "user": user.get_username() if user is not None and user.is_authenticated else "",
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 1),
            },
        )
        HTTP_REQUESTS.labels(request.method, str(response.status_code)).inc()
        HTTP_DURATION.labels(request.method).observe(duration)
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        return response


class AccessMiddleware:
    """Applies console.access.URL_RULES to every non-DRF view (DRF views: MatrixPermission)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        view_class = getattr(view_func, "cls", None)
        if isinstance(view_class, type) and issubclass(view_class, APIView):
            return None  # authenticated by DRF first, then MatrixPermission applies the rule
        rule = rule_for(request.resolver_match) if request.resolver_match else None
        if rule is None:
            return not_allowed(
                request, "This page has no access rule, so it is closed to everyone."
            )
        if rule is Open.METRICS:
            return (
                None
                if metrics_allowed(request)
                else HttpResponse(
                    "Metrics need 'Authorization: Bearer <TIDELINE_METRICS_TOKEN>' or loopback.\n",
                    status=401,
                    content_type="text/plain",
                )
            )
        if user_may(request.user, rule):
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return not_allowed(request, "Your role does not allow this page.")


def not_allowed(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, "403.html", {"reason": reason}, status=403)
