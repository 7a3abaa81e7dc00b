"""The flow definitions as the API shows them to people (any role may read them)."""

from __future__ import annotations

from typing import Any

from rest_framework import generics, serializers

from tracing.flows.models import FlowDefinition, FlowStep


class FlowStepSerializer(serializers.ModelSerializer[FlowStep]):
    system = serializers.CharField(source="system.name")
    owner = serializers.CharField(source="system.owner.team")
    runbook = serializers.URLField(source="system.runbook_url")

    class Meta:
        model = FlowStep
        fields = [
            "key", "title", "system", "owner", "runbook", "match", "after", "occurs_min", "occurs_max",
            "deadline_seconds", "deadline_from", "optional", "payload_schema",
        ]  # fmt: skip


class FlowDefinitionSerializer(serializers.ModelSerializer[FlowDefinition]):
    owner = serializers.SerializerMethodField()
    steps = FlowStepSerializer(many=True)

    class Meta:
        model = FlowDefinition
        fields = [
            "name", "version", "title", "kind", "owner", "runbook_url", "starts_with", "every_seconds", "cron",
            "grace_seconds", "volume", "created_at", "steps",
        ]  # fmt: skip

    def get_owner(self, definition: FlowDefinition) -> dict[str, Any]:
        owner = definition.owner
        return {"team": owner.team, "email": owner.email, "webhook": owner.webhook_url}


class FlowDefinitionList(generics.ListAPIView[FlowDefinition]):
    """The current version of every flow definition, with its steps and owners."""

    serializer_class = FlowDefinitionSerializer
    queryset = (
        FlowDefinition.objects.filter(is_current=True)
        .select_related("owner")
        .prefetch_related("steps__system__owner")
        .order_by("name")
    )
