from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleConfig(AppConfig):
    default = True
    name = "console"
    verbose_name = "Tideline console"

    def ready(self) -> None:
        from console import signals  # noqa: F401 - connects the journal to sign-in events


class ConsoleAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "console.admin_site.ConsoleAdminSite"
