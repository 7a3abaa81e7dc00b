"""The two channels: a webhook signed with HMAC-SHA256, and e-mail through Django's SMTP backend.

The webhook body (schema "tideline.alert/1", documented in README.md "Alerts"):

    {"schema": "tideline.alert/1", "delivery_id": "<uuid, the same on every retry>",
     "event": "opened" | "resolved", "state": "open" | "acknowledged" | "resolved" | ...,
     "rule": {"id", "name", "kind"}, "incident": {"id", "subject", "opened_at", "resolved_at"},
     "summary": "12 orders stalled at Certificate approved (QMS) — oldest 3 h 12 min",
     "counts": {"affected", "peak", "oldest_seconds"}, "owner": "Quality" | null,
     "links": {"incident": url, "list": url | null}, "text": "<the same for Slack or Teams>"}

Header `X-Tideline-Signature: sha256=<hex HMAC-SHA256 of the body with the channel's secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.urls import reverse

from tracing.alerts.models import Channel, Incident, Notification, WebhookHost

if TYPE_CHECKING:
    import uuid

SCHEMA = "tideline.alert/1"
SIGNATURE_HEADER = "X-Tideline-Signature"
DELIVERY_HEADER = "X-Tideline-Delivery"
SECRET_KIND = "tla_"  # noqa: S105 - a kind marker ("Tideline alert"), not a secret


class DeliveryFailed(Exception):
    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def secret_new() -> str:
    return SECRET_KIND + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# The allow-list


def webhook_hosts_allowed() -> list[str]:
    kept = WebhookHost.objects.values_list("host", flat=True)
    return [*settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS, *kept]


def webhook_url_problem(url: str) -> str:
    """Why a webhook may not post to `url`, or "" when it may."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "A webhook URL must start with https:// (or http://) and name a host."
    host = parts.hostname.lower()
    with_port = f"{host}:{parts.port}" if parts.port else host
    for allowed in (entry.strip().lower() for entry in webhook_hosts_allowed()):
        if allowed in (host, with_port) or (allowed.startswith(".") and host.endswith(allowed)):
            return ""
    return (
        f"{with_port} is not on the webhook allow-list. An admin adds it under Alerts → "
        "Channels, or in TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS."
    )


# What a notification says


def absolute(path: str) -> str:
    return f"{settings.TIDELINE_BASE_URL}{path}" if path else ""


def notification_body(
    incident: Incident, event: str, delivery_id: uuid.UUID, *, link: str, now: datetime
) -> dict[str, Any]:
    incident_url = absolute(reverse("alert-incident", args=[incident.pk]))
    oldest = int((now - incident.oldest_at).total_seconds()) if incident.oldest_at else None
    heading = "Resolved" if event == Notification.Event.RESOLVED else "Alert"
    return {
        "schema": SCHEMA,
        "delivery_id": str(delivery_id),
        "event": event,
        "state": incident.state,
        "rule": {"id": incident.rule.pk, "name": incident.rule.name, "kind": incident.rule.kind},
        "incident": {
            "id": incident.pk,
            "subject": incident.subject,
            "opened_at": incident.opened_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        },
        "summary": incident.summary,
        "counts": {
            "affected": incident.count,
            "peak": incident.peak_count,
            "oldest_seconds": oldest,
        },
        "owner": incident.owner.team if incident.owner else None,
        "links": {"incident": incident_url, "list": absolute(link) or None},
        # Slack and Teams incoming webhooks show `text` and ignore the rest.
        "text": f"{heading}: {incident.summary} — {incident_url}",
    }


def body_bytes(notification: Notification) -> bytes:
    # JSONB does not keep key order; sorted keys make every retry the same bytes.
    return json.dumps(notification.body, sort_keys=True, ensure_ascii=False).encode()


# Sending


def deliver(notification: Notification) -> int | None:
    """Send once; the HTTP status for webhooks. Raises DeliveryFailed."""
    if notification.channel.kind == Channel.Kind.WEBHOOK:
        return _webhook_post(notification)
    _email_send(notification)
    return None


def _webhook_post(notification: Notification) -> int:
    channel = notification.channel
    problem = webhook_url_problem(channel.url)
    if problem:  # the host may have left the allow-list since the channel was made
        raise DeliveryFailed(problem)
    body = body_bytes(notification)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(channel.secret, body),
        DELIVERY_HEADER: str(notification.delivery_id),
        "User-Agent": "Tideline-Alerts/1",
    }
    try:
        response = httpx.post(
            channel.url, content=body, headers=headers,
            timeout=settings.TIDELINE_ALERT_WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False,
        )  # fmt: skip
    except httpx.HTTPError as error:
        raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}", response.status_code)
    return response.status_code


def _email_send(notification: Notification) -> None:
    body = notification.body
    context = {"body": body, "event": notification.event}
    heading = "Resolved" if notification.event == Notification.Event.RESOLVED else "Alert"
    message = EmailMultiAlternatives(
        subject=f"[Tideline] {heading}: {body['summary']}"[:200],
        body=render_to_string("alerts/email.txt", context),
        to=[notification.channel.email],
        headers={
            "Message-ID": f"<{notification.delivery_id}@tideline>",
            DELIVERY_HEADER: str(notification.delivery_id),
        },
    )
    message.attach_alternative(render_to_string("alerts/email.html", context), "text/html")
    try:
        sent = get_connection(fail_silently=False).send_messages([message])
    except Exception as error:  # smtplib's errors, refused connections, TLS: all mean "retry"
        raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
    if not sent:
        raise DeliveryFailed("the mail server accepted nothing")
