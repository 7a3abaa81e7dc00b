from __future__ import annotations

from django.apps import AppConfig


class ReplayConfig(AppConfig):
    name = "replay"
    label = "replay"
    verbose_name = "Replay: dead letters sent again, exactly once"
