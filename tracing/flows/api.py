"""Flows, their definitions and search, as the API shows them to people (any role may read)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tracing.flows import detail as flows_detail
from tracing.flows.detail import flow_detail
from tracing.flows.models import FlowDefinition, FlowInstance, FlowStep
from tracing.flows.search import flows_search
from tracing.flows.selectors import DeadLetterRow, RecordRow, ReplayRow
from tracing.flows.stitching import SpanRow


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


class FlowSerializer(serializers.ModelSerializer[FlowInstance]):
    """A flow in a list: its status and where it stopped, in words."""

    definition = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = FlowInstance
        fields = [
            "correlation_id", "definition", "status", "stopped_at", "last_step", "sentence", "started_at",
            "last_activity_at", "completed_at", "due_at", "systems", "url",
        ]  # fmt: skip

    def get_definition(self, flow: FlowInstance) -> dict[str, Any] | None:
        definition = flow.definition
        if definition is None:
            return None
        return {"name": definition.name, "version": definition.version, "title": definition.title}

    def get_url(self, flow: FlowInstance) -> str:
        return reverse("flow", args=[flow.correlation_id])

    def to_representation(self, flow: FlowInstance) -> dict[str, Any]:
        """The fields above, read straight off the flow. A ModelSerializer builds its fields
        anew for every instance serialized alone, which was a tenth of the flow API's CPU; the
        declared fields still describe the answer in the schema, and a test holds the two equal."""
        return {
            "correlation_id": flow.correlation_id, "definition": self.get_definition(flow),
            "status": flow.status, "stopped_at": flow.stopped_at, "last_step": flow.last_step,
            "sentence": flow.sentence, "started_at": _time(flow.started_at),
            "last_activity_at": _time(flow.last_activity_at), "completed_at": _time(flow.completed_at),
            "due_at": _time(flow.due_at), "systems": list(flow.systems), "url": self.get_url(flow),
        }  # fmt: skip


_TIME = serializers.DateTimeField()


def _time(value: datetime | None) -> str | None:
    return None if value is None else _TIME.to_representation(value)


class FlowFilter(serializers.Serializer[dict[str, Any]]):
    status = serializers.ChoiceField(choices=FlowInstance.Status.choices, required=False)
    definition = serializers.SlugField(required=False)
    system = serializers.CharField(max_length=50, required=False)
    since = serializers.DateTimeField(required=False)


@extend_schema(parameters=[FlowFilter])
class FlowList(generics.ListAPIView[FlowInstance]):
    """Flows, most recently active first; filter by status, definition, system and activity since."""

    serializer_class = FlowSerializer

    def get_queryset(self) -> QuerySet[FlowInstance]:
        given = FlowFilter(data=self.request.query_params)
        given.is_valid(raise_exception=True)
        wanted = given.validated_data
        flows = FlowInstance.objects.select_related("definition").order_by("-last_activity_at")
        if "status" in wanted:
            flows = flows.filter(status=wanted["status"])
        if "definition" in wanted:
            flows = flows.filter(definition__name=wanted["definition"])
        if "system" in wanted:
            flows = flows.filter(systems__contains=[wanted["system"]])
        if "since" in wanted:
            flows = flows.filter(last_activity_at__gte=wanted["since"])
        return flows


class FlowDetail(APIView):
    """One flow: status, where it stopped and why, its owner, steps, traces, spans, records,
    dead letters and replays."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, correlation_id: str) -> Response:
        detail = flow_detail(correlation_id)
        if detail is None:
            raise NotFound(f"No flow has the correlation ID {correlation_id!r}.")
        return Response(flow_document(detail))


def flow_document(detail: flows_detail.FlowDetail) -> dict[str, Any]:
    facts = detail.facts
    return {
        **FlowSerializer(detail.instance).data,
        "owner": dataclasses.asdict(detail.owner) if detail.owner else None,
        "steps": detail.steps,
        "traces": [{"trace_id": trace.hex(), "via": via} for trace, via in facts.traces.items()],
        "spans": [_span_document(span) for span in facts.spans],
        "records": [_record_document(record) for record in facts.records],
        "dead_letters": [_dead_letter_document(letter) for letter in facts.dead_letters],
        "replays": [
            _replay_document(replay) for letter in facts.dead_letters for replay in letter.replays
        ],
    }


def _span_document(span: SpanRow) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() if span.parent_span_id else None,
        "name": span.name, "service": span.service_name, "start_time": span.start_time,
        "end_time": span.end_time, "duration_ns": span.duration_ns,
        "status": {0: "unset", 1: "ok", 2: "error"}.get(span.status_code, "unset"),
        "status_message": span.status_message, "correlation_id": span.correlation_id,
        "message_id": span.message_id, "business_keys": span.business_keys, "links": span.links,
    }  # fmt: skip


def _record_document(record: RecordRow) -> dict[str, Any]:
    counts = None
    if record.counts_expected is not None:
        counts = {"expected": record.counts_expected, "processed": record.counts_processed}
    return {
        "record_id": record.record_id, "occurred_at": record.occurred_at, "system": record.system,
        "step": record.step, "event": record.event, "message_id": record.message_id,
        "trace_id": record.trace_id.hex() if record.trace_id else None, "error": record.error,
        "business_keys": record.business_keys, "counts": counts, "content_type": record.content_type,
    }  # fmt: skip


def _dead_letter_document(letter: DeadLetterRow) -> dict[str, Any]:
    return {
        "id": letter.id, "message_id": letter.message_id, "system": letter.system, "error": letter.error,
        "state": letter.state, "attempts": letter.attempts, "first_failed_at": letter.first_failed_at,
        "last_failed_at": letter.last_failed_at, "transport": letter.transport,
    }  # fmt: skip


def _replay_document(replay: ReplayRow) -> dict[str, Any]:
    return {
        "id": replay.id, "dead_letter_id": replay.dead_letter_id, "state": replay.state,
        "verdict": replay.verdict, "requested_at": replay.requested_at, "sent_at": replay.sent_at,
        "finished_at": replay.finished_at, "outcome": replay.outcome,
    }  # fmt: skip


class SearchQuery(serializers.Serializer[dict[str, Any]]):
    q = serializers.CharField(max_length=200, trim_whitespace=True)


class Search(APIView):
    """Find flows by correlation ID, business key value, message ID, trace ID or span ID."""

    @extend_schema(parameters=[SearchQuery], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        given = SearchQuery(data=request.query_params)
        given.is_valid(raise_exception=True)
        result = flows_search(given.validated_data["q"])
        flows = FlowSerializer(result.flows, many=True).data
        for flow in flows:
            flow["matched_by"] = result.matched_by.get(flow["correlation_id"], "")
        return Response({
            "query": result.query, "searched": result.searched, "count": len(flows), "flows": flows,
            "unattached": result.unattached,
        })  # fmt: skip
