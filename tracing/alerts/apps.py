from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "tracing.alerts"
    label = "alerts"
    verbose_name = "Alerts: rules, incidents, channels and notifications"
