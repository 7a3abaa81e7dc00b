"""Alerts in the admin, read-only: rules, channels and silences change only through the
console's pages, which check them and journal every change."""

from __future__ import annotations

from django.contrib import admin

from console.admin import ReadOnlyAdmin
from tracing.alerts.models import AlertRule, Channel, Incident, Notification, Silence, WebhookHost


@admin.register(AlertRule)
class AlertRuleAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "definition", "system", "threshold", "is_active"]


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdmin):
    list_display = ["name", "kind", "url", "email", "owner", "is_active"]
    exclude = ["secret"]  # shown once, in the console, never again


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["summary", "rule", "state", "count", "opened_at"]
    list_filter = ["state"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["delivery_id", "event", "channel", "state", "attempts", "created_at"]


admin.site.register(Silence, ReadOnlyAdmin)
admin.site.register(WebhookHost, ReadOnlyAdmin)
