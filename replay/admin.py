"""Admins declare replay destinations, approval rules and auto-replay rules; every change is
journaled."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from console.services import journal_append
from replay.models import ApprovalRule, AutoReplayRule, Destination


class JournaledAdmin(admin.ModelAdmin):
    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        journal_append(
            actor=request.user,
            action=f"{obj._meta.model_name}.{'change' if change else 'create'}",
            subject=f"{obj._meta.model_name}:{obj.pk}",
            details={"value": str(obj), "fields": sorted(form.changed_data)},
            request=request,
        )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        journal_append(
            actor=request.user,
            action=f"{obj._meta.model_name}.delete",
            subject=f"{obj._meta.model_name}:{obj.pk}",
            details={"value": str(obj)},
            request=request,
        )
        super().delete_model(request, obj)


@admin.register(Destination)
class DestinationAdmin(JournaledAdmin):
    list_display = ["address_prefix", "deduplicates", "side_effects", "requires_approval", "note"]


@admin.register(ApprovalRule)
class ApprovalRuleAdmin(JournaledAdmin):
    list_display = ["scope", "name"]


@admin.register(AutoReplayRule)
class AutoReplayRuleAdmin(JournaledAdmin):
    list_display = [
        "name", "destination", "error_class", "rate_per_second", "enabled", "owner",
        "last_checked_at", "last_check", "last_job",
    ]  # fmt: skip
    list_filter = ["enabled"]
    fields = ["name", "destination", "health_url", "error_class", "rate_per_second", "enabled", "owner",
              "last_checked_at", "last_check", "last_job"]  # fmt: skip
    readonly_fields = ["last_checked_at", "last_check", "last_job"]
