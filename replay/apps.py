from __future__ import annotations

from django.apps import AppConfig


class ReplayConfig(AppConfig):
    name = "replay"
    label = "replay"
    verbose_name = "Replay: dead letters sent again, exactly once"

    def ready(self) -> None:
        # A prefix that admits more than it names must stop start-up, not open a way out.
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from replay.models import prefix_problem

        for prefix in settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS:
            problem = prefix_problem(prefix)
            if problem:
                raise ImproperlyConfigured(f"TIDELINE_REPLAY_ALLOWED_DESTINATIONS: {problem}")
