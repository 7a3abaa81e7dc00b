"""Reads of alerts: incidents for the list, a flow's page, and the notification history."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from tracing.alerts.models import ACTIVE_STATES, DeliveryAttempt, Incident, Notification


def incidents_listed(state: str) -> QuerySet[Incident]:
    """ "active" (the default), a single state, or "all"; newest first."""
    incidents = Incident.objects.select_related("rule", "owner").annotate(
        told=Count("notifications")
    )
    if state in {"", "active"}:
        incidents = incidents.filter(state__in=ACTIVE_STATES)
    elif state != "all":
        incidents = incidents.filter(state=state)
    return incidents.order_by("-opened_at", "-pk")


def incidents_for_flow(correlation_id: str) -> list[Incident]:
    """The incidents that covered a flow, newest first, each with its notifications: the flow
    page's "was anyone alerted?" (through the GIN index on correlation_ids)."""
    notifications = Notification.objects.select_related("channel").order_by("created_at")
    return list(
        Incident.objects.filter(correlation_ids__contains=[correlation_id])
        .select_related("rule", "owner")
        .prefetch_related(Prefetch("notifications", queryset=notifications))
        .order_by("-opened_at")
    )


def notification_history(*, limit: int = 200) -> list[Notification]:
    """Every notification, newest first, with its attempts and outcome."""
    attempts = DeliveryAttempt.objects.order_by("at")
    return list(
        Notification.objects.select_related("channel", "incident__rule")
        .prefetch_related(Prefetch("delivery_attempts", queryset=attempts))
        .order_by("-created_at", "-pk")[:limit]
    )
