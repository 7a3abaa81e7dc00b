from __future__ import annotations

from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "tracing.flows"
    label = "flows"
    verbose_name = "Flows: definitions, owners, status and timelines"
