"""The console's own pages: sign-in, dashboard, search, tokens, health and metrics."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.core import signing
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from kombu import Connection

from console import metrics
from console.models import ApiToken, IngestToken
from console.selectors import LOGIN_THROTTLED, login_is_throttled, refusal_journaled
from console.services import (
    IssuedToken,
    api_token_create,
    api_token_revoke,
    ingest_token_create,
    ingest_token_revoke,
    journal_append,
    system_names,
)
from tracing.flows.search import flows_search

log = logging.getLogger(__name__)


class LoginView(auth_views.LoginView):
    """Django's login, refusing an account or address after repeated failures."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = request.POST.get("username", "")[:150]
        remote_addr = request.META.get("REMOTE_ADDR")
        if login_is_throttled(username=username, remote_addr=remote_addr, now=timezone.now()):
            # Journaled once per account and window: refused attempts must not grow the journal.
            if not refusal_journaled(username=username, now=timezone.now()):
                journal_append(
                    actor=None,
                    action=LOGIN_THROTTLED,
                    subject=f"user:{username.lower()}",
                    request=request,
                )
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, "Too many failed sign-ins. Wait a few minutes, then try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """Exactly one flow: straight to it. Several: a short list. None: what was searched.

    Typing in the header box asks for the results fragment only (htmx), and never redirects.
    """
    result = flows_search(request.GET.get("q", "")[:200])
    context = {"query": result.query, "result": result}
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "console/search.html#results", context)
    if len(result.flows) == 1:
        return redirect("flow", result.flows[0].correlation_id)
    return render(request, "console/search.html", context)


class TokenNameForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. 'nightly report script'."
    )


class IngestTokenForm(forms.Form):
    sender = forms.SlugField(max_length=100, help_text="Who sends with it, e.g. runtime-prod.")
    systems = forms.CharField(
        required=False,
        max_length=500,
        help_text="Optional: comma-separated systems it may name, e.g. ERP,WMS.",
    )

    def clean_systems(self) -> list[str]:
        try:
            return system_names(self.cleaned_data["systems"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


# A new secret travels to the next page view in a signed, short-lived cookie that page
# deletes, so the page showing it is a GET (reloading neither resubmits nor shows it again)
# and the secret is never stored on the server, not even in a session row.
_ISSUED = "tideline_issued_token"
_ISSUED_SECONDS = 120


def _issued_redirect(
    request: HttpRequest, page: str, issued: IssuedToken, label: str
) -> HttpResponse:
    response = redirect(page)
    sealed = signing.dumps(
        {"secret": issued.secret, "label": label, "user": request.user.pk}, salt=_ISSUED
    )
    response.set_cookie(
        _ISSUED, sealed, max_age=_ISSUED_SECONDS, path=reverse(page), httponly=True,
        secure=settings.SESSION_COOKIE_SECURE, samesite="Strict",
    )  # fmt: skip
    return response


def _token_page(request: HttpRequest, template: str, form: forms.Form, tokens: Any) -> HttpResponse:
    issued = None
    with contextlib.suppress(signing.BadSignature):  # none, expired or forged: nothing to show
        issued = signing.loads(
            request.COOKIES.get(_ISSUED, ""), salt=_ISSUED, max_age=_ISSUED_SECONDS
        )
    if issued and issued.get("user") != request.user.pk:
        issued = None
    context = {"form": form, "issued": issued, "tokens": tokens}
    response = render(request, template, context, status=400 if form.errors else 200)
    if _ISSUED in request.COOKIES:
        response.delete_cookie(_ISSUED, path=request.path)
        response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = TokenNameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        assert isinstance(request.user, User)  # the access rules let only signed-in people here
        name = form.cleaned_data["name"]
        issued = api_token_create(user=request.user, name=name, request=request)
        return _issued_redirect(request, "api-tokens", issued, name)
    tokens = ApiToken.objects.filter(user=request.user.pk).order_by("-created_at")
    return _token_page(request, "console/api_tokens.html", form, tokens)


@require_POST
def api_token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user.pk)
    api_token_revoke(token=token, actor=request.user, request=request)
    return redirect("api-tokens")


@require_http_methods(["GET", "POST"])
def ingest_tokens(request: HttpRequest) -> HttpResponse:
    form = IngestTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        sender = form.cleaned_data["sender"]
        issued = ingest_token_create(
            sender=sender, systems=form.cleaned_data["systems"], actor=request.user, request=request
        )
        return _issued_redirect(request, "ingest-tokens", issued, sender)
    tokens = IngestToken.objects.order_by("sender", "-created_at")
    return _token_page(request, "console/ingest_tokens.html", form, tokens)


@require_POST
def ingest_token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(IngestToken, pk=token_id)
    ingest_token_revoke(token=token, actor=request.user, request=request)
    return redirect("ingest-tokens")


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database and the broker both answer; 503 names what does not."""
    checks = {"database": _database_answers(), "broker": _broker_answers()}
    down = [name for name, ok in checks.items() if not ok]
    body = {"status": "ready" if not down else "unavailable", "down": down, "checks": checks}
    return JsonResponse(body, status=503 if down else 200)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception as error:  # any failure means "not ready"
        log.warning("readyz: database unreachable", extra={"error": str(error)})
        connection.close_if_unusable_or_obsolete()
        return False


def _broker_answers() -> bool:
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception as error:  # any failure means "not ready"
        log.warning("readyz: broker unreachable", extra={"error": str(error)})
        return False


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(metrics.scrape(), content_type="text/plain; version=0.0.4; charset=utf-8")
