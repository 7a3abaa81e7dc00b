from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from console.access import Capability, capabilities_of


class ConsoleAdminSite(admin.AdminSite):
    """Django's admin, open exactly to the roles the permission matrix lets administer."""

    site_header = "Tideline administration"
    site_title = "Tideline"
    index_title = "Users, roles and records"

    def has_permission(self, request: HttpRequest) -> bool:
        return Capability.ADMINISTER in capabilities_of(request.user)
