"""The alert pages under /alerts/: incidents, rules, channels, silences and the history.

Pages only read; every POST calls one service of tracing.alerts.services, then redirects
(or, when a form has errors, shows them with status 400 and saves nothing).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.access import Capability, capabilities_of
from tracing.alerts import selectors, services
from tracing.alerts.forms import AlertRuleForm, ChannelForm, SilenceForm, WebhookHostForm
from tracing.alerts.models import AlertRule, Channel, Incident, Silence, WebhookHost
from tracing.flows.expectations import duration_words

PAGE_SIZE = 50
STATES = ["active", "open", "acknowledged", "ignored", "resolved", "all"]


def _posted_id(request: HttpRequest, field: str) -> int:
    """The row a form names; anything but a number names no row (404, never a 500)."""
    raw = request.POST.get(field, "")
    if not (raw.isascii() and raw.isdigit()):
        raise Http404(f"No {field} {raw!r}.")
    return int(raw)


def _may(request: HttpRequest, capability: Capability) -> bool:
    return capability in capabilities_of(request.user)


@require_GET
def incidents_page(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "active")
    state = state if state in STATES else "active"
    rows = Paginator(selectors.incidents_listed(state), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request, "alerts/incidents.html", {"rows": rows, "state": state, "states": STATES}
    )


@require_GET
def incident_page(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.select_related("rule", "owner"), pk=incident_id)
    now = timezone.now()
    context = {
        "incident": incident,
        "age": duration_words(max(0, int((now - incident.oldest_at).total_seconds())))
        if incident.oldest_at else "",
        "notifications": incident.notifications.select_related("channel")
        .prefetch_related("delivery_attempts").order_by("created_at"),
        "may_operate": _may(request, Capability.OPERATE),
        "replayable": incident.rule.kind == AlertRule.Kind.DEAD_LETTERS and incident.is_active,
        "list_link": incident.details.get("link", ""),
    }  # fmt: skip
    return render(request, "alerts/incident.html", context)


@require_POST
def incident_decide_post(request: HttpRequest, incident_id: int) -> HttpResponse:
    get_object_or_404(Incident, pk=incident_id)
    action = request.POST.get("action", "")
    try:
        incident = services.incident_decide(
            incident_id=incident_id, action=action, actor=request.user, now=timezone.now(),
            request=request,
        )  # fmt: skip
    except services.IncidentRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, f"Incident {incident.state}.")
    return redirect("alert-incident", incident_id=incident_id)


@require_POST
def incident_replay_post(request: HttpRequest, incident_id: int) -> HttpResponse:
    incident = get_object_or_404(Incident.objects.select_related("rule"), pk=incident_id)
    try:
        job = services.incident_bulk_replay(
            incident=incident, actor=request.user, now=timezone.now(), request=request
        )
    except services.IncidentRefused as refused:
        messages.error(request, refused.message)
    else:
        messages.success(
            request, f"Bulk replay {job.pk} started for {job.matched} dead letters ({job.state})."
        )
    return redirect("alert-incident", incident_id=incident_id)


# Rules


@require_GET
def rules_page(request: HttpRequest) -> HttpResponse:
    rules = AlertRule.objects.prefetch_related("channels").order_by("name")
    context = {"rules": rules, "may_administer": _may(request, Capability.ADMINISTER)}
    return render(request, "alerts/rules.html", context)


@require_http_methods(["GET", "POST"])
def rule_edit_page(request: HttpRequest, rule_id: int | None = None) -> HttpResponse:
    rule = get_object_or_404(AlertRule, pk=rule_id) if rule_id else None
    form = AlertRuleForm(request.POST or None, instance=rule)
    if request.method == "POST":
        if request.POST.get("delete") and rule is not None:
            services.alert_rule_delete(rule=rule, actor=request.user, request=request)
            messages.success(request, f"Rule {rule.name} deleted.")
            return redirect("alert-rules")
        if form.is_valid():
            saved = services.alert_rule_save(form=form, actor=request.user, request=request)
            messages.success(request, f"Rule {saved.name} saved.")
            return redirect("alert-rules")
    status = 400 if form.errors else 200
    return render(request, "alerts/rule_form.html", {"form": form, "rule": rule}, status=status)


# Channels and the webhook allow-list


@require_http_methods(["GET", "POST"])
def channels_page(request: HttpRequest) -> HttpResponse:
    form, host_form = ChannelForm(None), WebhookHostForm(None)
    secret = ""
    if request.method == "POST":
        done, form, host_form, secret = _channels_post(request)
        if done and not secret:
            return redirect("alert-channels")
    context: dict[str, Any] = {
        "form": form, "host_form": host_form, "secret": secret,
        "channels": Channel.objects.order_by("owner__team", "name").select_related("owner"),
        "hosts": WebhookHost.objects.order_by("host"),
        "setting_hosts": settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS,
    }  # fmt: skip
    status = 400 if form.errors or host_form.errors else 200
    return render(request, "alerts/channels.html", context, status=status)


def _channels_post(request: HttpRequest) -> tuple[bool, ChannelForm, WebhookHostForm, str]:
    """(done, channel form, host form, a secret to show once)."""
    action = request.POST.get("action", "")
    form, host_form = ChannelForm(None), WebhookHostForm(None)
    actor = request.user
    if action == "create":
        form = ChannelForm(request.POST)
        if form.is_valid():
            channel, secret = services.channel_create(form=form, actor=actor, request=request)
            messages.success(request, f"Channel {channel.name} made.")
            return True, ChannelForm(None), host_form, secret
    elif action in {"rotate", "enable", "disable"}:
        channel = get_object_or_404(Channel, pk=_posted_id(request, "channel"))
        if action == "rotate":
            return (
                True,
                form,
                host_form,
                services.channel_secret_rotate(channel=channel, actor=actor, request=request),
            )
        services.channel_active_set(
            channel=channel, active=action == "enable", actor=actor, request=request
        )
        return True, form, host_form, ""
    elif action == "host_add":
        host_form = WebhookHostForm(request.POST)
        if host_form.is_valid():
            services.webhook_host_add(**host_form.cleaned_data, actor=actor, request=request)
            return True, form, WebhookHostForm(None), ""
    elif action == "host_remove":
        host = get_object_or_404(WebhookHost, pk=_posted_id(request, "host"))
        services.webhook_host_remove(host=host, actor=actor, request=request)
        return True, form, host_form, ""
    return False, form, host_form, ""


# Silences and history


@require_GET
def silences_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    context = {
        "form": SilenceForm(None),
        "active": Silence.objects.filter(expires_at__gt=now).select_related("rule").order_by("expires_at"),
        "ended": Silence.objects.filter(expires_at__lte=now).select_related("rule").order_by("-expires_at")[:50],
        "may_operate": _may(request, Capability.OPERATE),
    }  # fmt: skip
    return render(request, "alerts/silences.html", context)


@require_POST
def silence_post(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    if request.POST.get("action") == "end":
        silence = get_object_or_404(Silence, pk=_posted_id(request, "silence"))
        services.silence_end(silence=silence, actor=request.user, now=now, request=request)
        return redirect("alert-silences")
    form = SilenceForm(request.POST)
    if not form.is_valid():
        context = {"form": form, "active": [], "ended": [], "may_operate": True}
        return render(request, "alerts/silences.html", context, status=400)
    services.silence_create(
        rule=form.cleaned_data["rule"], subject=form.cleaned_data["subject"],
        seconds=form.cleaned_data["duration"], reason=form.cleaned_data["reason"],
        actor=request.user, now=now, request=request,
    )  # fmt: skip
    messages.success(request, "Silenced.")
    return redirect("alert-silences")


@require_GET
def history_page(request: HttpRequest) -> HttpResponse:
    return render(
        request, "alerts/history.html", {"notifications": selectors.notification_history()}
    )
