"""What the admin role sees in Django's admin; every change to a user is journaled."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import Group
from django.http import HttpRequest

from console.access import roles_of
from console.models import ApiToken, IngestToken, JournalEntry
from console.services import journal_append

User = get_user_model()
admin.site.unregister(User)
# Roles are the groups named support, operator, auditor and admin: renaming or deleting one
# would silently take a role away, so groups are not edited here; users are given them.
admin.site.unregister(Group)


@admin.register(User)
class JournaledUserAdmin(UserAdmin):
    """Roles are the groups support, operator, auditor and admin; every change is journaled."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        user = form.instance
        user.__dict__.pop("_tideline_roles", None)
        journal_append(
            actor=request.user,
            action="user.change" if change else "user.create",
            subject=f"user:{user.get_username().lower()}",
            details={
                "roles": sorted(roles_of(user)),
                "active": user.is_active,
                "fields": sorted(form.changed_data),
            },
            request=request,
        )

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for user in queryset:
            _journal_deletion(request, user)
        super().delete_queryset(request, queryset)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> Any:
        response = super().user_change_password(request, id, form_url)
        user = self.get_object(request, id)
        if (
            user is not None and request.method == "POST" and response.status_code == 302
        ):  # accepted
            journal_append(
                actor=request.user, action="user.password_change",
                subject=f"user:{user.get_username().lower()}", request=request,
            )  # fmt: skip
        return response

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        _journal_deletion(request, obj)
        super().delete_model(request, obj)


def _journal_deletion(request: HttpRequest, user: Any) -> None:
    journal_append(
        actor=request.user,
        action="user.delete",
        subject=f"user:{user.get_username().lower()}",
        request=request,
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "subject", "remote_addr"]
    list_filter = ["action"]
    search_fields = ["actor", "subject"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]


@admin.register(IngestToken)
class IngestTokenAdmin(ReadOnlyAdmin):
    list_display = ["sender", "systems", "prefix", "created_at", "last_used_at", "revoked_at"]
    exclude = ["digest"]
