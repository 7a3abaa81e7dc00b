from __future__ import annotations

from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "tracing.flows"
    label = "flows"
    verbose_name = "Flows: definitions, owners, status and timelines"

    def ready(self) -> None:
        # A mask path that cannot be read must stop start-up, not a support person's page.
        from tracing.flows.masking import mask_paths

        mask_paths()
