"""Dead letters and replays for scripts: everything an operator does in the console."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from console.access import Capability, capabilities_of
from replay.bulk import (
    Selection,
    bulk_replay_control,
    bulk_replay_counts,
    bulk_replay_create,
    bulk_replay_preview,
)
from replay.models import RATE_PER_SECOND_MAX, BulkReplay, ReplayAttempt
from replay.payloads import payload_diff
from replay.selectors import (
    AGE_HELP,
    AgeInvalid,
    age_parse,
    dead_letters_matching,
    failed_window,
    window_problem,
)
from replay.services import (
    ReplayOrder,
    ReplayRefused,
    dead_letter_close,
    replay_confirm_delivered,
    replay_decide,
    replay_preview,
    replay_request,
)
from replay.transports.common import without_password
from tracing.flows.masking import headers_shown, payload_shown
from tracing.ingest.models import DeadLetter


def refusal(refused: ReplayRefused) -> Response:
    return Response({"detail": refused.message, "current": refused.current}, status=refused.status)


class ReplaySerializer(serializers.ModelSerializer[ReplayAttempt]):
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    decided_by = serializers.CharField(source="decided_by.username", default=None)
    diff = serializers.SerializerMethodField()

    class Meta:
        model = ReplayAttempt
        fields = [
            "id", "dead_letter", "dead_letter_version", "state", "verdict", "address", "redirected", "repaired",
            "idempotency_key", "reason", "requested_by", "requested_at", "decided_by", "decided_at",
            "decision_reason", "sent_at", "finished_at", "outcome", "outcome_status", "diff",
        ]  # fmt: skip

    def get_diff(self, attempt: ReplayAttempt) -> str:
        request = self.context.get("request")
        unmasked = request is not None and Capability.VIEW_UNMASKED in capabilities_of(request.user)
        if not attempt.repaired or not unmasked:
            return ""
        return payload_diff(bytes(attempt.dead_letter.payload), bytes(attempt.payload))


class DeadLetterSerializer(serializers.ModelSerializer[DeadLetter]):
    destination = serializers.SerializerMethodField()

    def get_destination(self, dead_letter: DeadLetter) -> dict[str, Any]:
        """Where it was going, without a broker password."""
        return {
            key: without_password(value) if key == "url" and isinstance(value, str) else value
            for key, value in dead_letter.destination.items()
        }

    class Meta:
        model = DeadLetter
        fields = [
            "id", "sender", "message_id", "correlation_id", "system", "transport", "destination", "content_type",
            "error", "attempts", "first_failed_at", "last_failed_at", "state", "version",
        ]  # fmt: skip


@extend_schema_field(OpenApiTypes.STR)
class AgeField(serializers.Field[Any, Any, str, Any]):
    """A duration as an operator writes it (`1h`, `30m`, `2d`): see replay.selectors."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return age_parse(str(data))
        except AgeInvalid as invalid:
            raise serializers.ValidationError(str(invalid)) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


def _age_field(meaning: str) -> AgeField:
    return AgeField(required=False, help_text=f"{meaning}: {AGE_HELP}.")


class FailedWindow(serializers.Serializer[dict[str, Any]]):
    """When the dead letters last failed: times, ages counted back from now, or both."""

    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    age = _age_field("Failed within this long ago (age=1h: in the last hour)")
    older_than = _age_field("Failed more than this long ago (older_than=15m)")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        problem = window_problem(*failed_window(data))
        if problem:
            raise serializers.ValidationError({"until": problem})
        return data


class DeadLetterFilter(FailedWindow):
    system = serializers.CharField(max_length=50, required=False)
    definition = serializers.CharField(
        max_length=100, required=False, help_text="A flow definition's name."
    )
    state = serializers.ChoiceField(choices=DeadLetter.State.choices, required=False)
    error = serializers.CharField(max_length=200, required=False)


@extend_schema(parameters=[DeadLetterFilter])
class DeadLetterList(generics.ListAPIView[DeadLetter]):
    """Dead letters, newest failure first; filter by system, flow definition, state, error text
    and when they last failed (since, until, age, older_than)."""

    serializer_class = DeadLetterSerializer

    def get_queryset(self) -> QuerySet[DeadLetter]:
        given = DeadLetterFilter(data=self.request.query_params)
        given.is_valid(raise_exception=True)
        return dead_letters_matching(given.validated_data).order_by("-last_failed_at", "-id")


class DeadLetterDetail(APIView):
    """One dead letter: payload (masked for support), headers, history and every replay."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, dead_letter_id: int) -> Response:
        dead_letter = DeadLetter.objects.filter(id=dead_letter_id).first()
        if dead_letter is None:
            raise NotFound(f"No dead letter has the ID {dead_letter_id}.")
        unmasked = Capability.VIEW_UNMASKED in capabilities_of(request.user)
        shown = payload_shown(
            bytes(dead_letter.payload), dead_letter.content_type, unmasked=unmasked
        )
        replays = (
            ReplayAttempt.objects.filter(dead_letter=dead_letter)
            .select_related("requested_by", "decided_by")
            .order_by("-requested_at")
        )
        return Response({
            **DeadLetterSerializer(dead_letter).data,
            "payload": shown.text if shown else None, "payload_masked": bool(shown and shown.masked),
            "payload_note": shown.note if shown else "",
            "headers": headers_shown(dead_letter.headers, unmasked=unmasked), "history": dead_letter.history,
            "replays": ReplaySerializer(replays, many=True, context={"request": request}).data,
        })  # fmt: skip


class ReplayInput(serializers.Serializer[dict[str, Any]]):
    version = serializers.IntegerField(help_text="The dead letter's version you saw.")
    payload = serializers.CharField(
        required=False, trim_whitespace=False, help_text="A repaired payload."
    )
    payload_encoding = serializers.ChoiceField(choices=["utf-8", "base64"], default="utf-8")
    headers = serializers.DictField(required=False)
    destination = serializers.DictField(required=False, help_text="Another allowed destination.")
    to_exchange = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    confirm_stale = serializers.BooleanField(default=False)
    dry_run = serializers.BooleanField(default=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "payload" in data and data["payload_encoding"] == "base64":
            try:
                data["payload"] = base64.b64decode(data["payload"], validate=True)
            except (binascii.Error, ValueError):
                raise serializers.ValidationError({"payload": "not valid base64"}) from None
        elif "payload" in data:
            data["payload"] = data["payload"].encode()
        return data


class DeadLetterReplay(APIView):
    """Replay a dead letter (optionally repaired or redirected); `dry_run` shows the request only."""

    @extend_schema(request=ReplayInput, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, dead_letter_id: int) -> Response:
        given = ReplayInput(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        order = ReplayOrder(
            dead_letter_id=dead_letter_id, version_seen=data["version"], payload=data.get("payload"),
            headers=data.get("headers"), destination=data.get("destination"), to_exchange=data["to_exchange"],
            reason=data["reason"], confirm_stale=data["confirm_stale"],
        )  # fmt: skip
        try:
            if data["dry_run"]:
                return Response(replay_preview(order=order))
            attempt = replay_request(
                order=order, actor=request.user, now=timezone.now(), request=request
            )
        except ReplayRefused as refused:
            return refusal(refused)
        return Response(ReplaySerializer(attempt, context={"request": request}).data, status=202)


class Closing(serializers.Serializer[dict[str, Any]]):
    version = serializers.IntegerField()
    reason = serializers.CharField(max_length=2000)


def _close(request: Request, dead_letter_id: int, state: str) -> Response:
    given = Closing(data=request.data)
    given.is_valid(raise_exception=True)
    try:
        dead_letter = dead_letter_close(
            dead_letter_id=dead_letter_id, version_seen=given.validated_data["version"], state=state,
            reason=given.validated_data["reason"], actor=request.user, now=timezone.now(), request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        return refusal(refused)
    return Response(DeadLetterSerializer(dead_letter).data)


class DeadLetterResolve(APIView):
    """Mark a dead letter dealt with (outside Tideline), with a reason."""

    @extend_schema(request=Closing, responses=DeadLetterSerializer)
    def post(self, request: Request, dead_letter_id: int) -> Response:
        return _close(request, dead_letter_id, DeadLetter.State.RESOLVED)


class DeadLetterDiscard(APIView):
    """Mark a dead letter as never to be sent, with a reason."""

    @extend_schema(request=Closing, responses=DeadLetterSerializer)
    def post(self, request: Request, dead_letter_id: int) -> Response:
        return _close(request, dead_letter_id, DeadLetter.State.DISCARDED)


class ReplayDetail(generics.RetrieveAPIView[ReplayAttempt]):
    """One replay attempt: its verdict, who asked and decided, and its outcome."""

    serializer_class = ReplaySerializer
    queryset = ReplayAttempt.objects.select_related("dead_letter", "requested_by", "decided_by")
    lookup_url_kwarg = "replay_id"


class Decision(serializers.Serializer[dict[str, Any]]):
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)


class ReplayApprove(APIView):
    """A second operator approves a replay waiting for approval: it is sent."""

    @extend_schema(request=Decision, responses=ReplaySerializer)
    def post(self, request: Request, replay_id: UUID) -> Response:
        return _decide(request, str(replay_id), approve=True)


class ReplayReject(APIView):
    """A second operator rejects a replay waiting for approval, with a reason: it is never sent."""

    @extend_schema(request=Decision, responses=ReplaySerializer)
    def post(self, request: Request, replay_id: UUID) -> Response:
        return _decide(request, str(replay_id), approve=False)


def _decide(request: Request, replay_id: str, *, approve: bool) -> Response:
    given = Decision(data=request.data)
    given.is_valid(raise_exception=True)
    try:
        attempt = replay_decide(
            attempt_id=replay_id, approve=approve, actor=request.user, reason=given.validated_data["reason"],
            now=timezone.now(), request=request,
        )  # fmt: skip
    except ReplayRefused as refused:
        return refusal(refused)
    return Response(ReplaySerializer(attempt).data)


class ReplayConfirmDelivered(APIView):
    """The operator checked the target: an in-doubt replay did arrive."""

    @extend_schema(request=None, responses=ReplaySerializer)
    def post(self, request: Request, replay_id: UUID) -> Response:
        try:
            attempt = replay_confirm_delivered(
                attempt_id=str(replay_id), actor=request.user, now=timezone.now(), request=request
            )
        except ReplayRefused as refused:
            return refusal(refused)
        return Response(ReplaySerializer(attempt).data)


class BulkSelection(FailedWindow):
    """The dead-letter filter (ages become times when the job starts) and how to replay."""

    system = serializers.CharField(max_length=50, required=False, default="", allow_blank=True)
    definition = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)
    state = serializers.ChoiceField(
        choices=DeadLetter.State.choices, required=False, default="", allow_blank=True
    )
    error = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    rate_per_second = serializers.FloatField(min_value=0, max_value=RATE_PER_SECOND_MAX, default=0)
    include_stale = serializers.BooleanField(default=False)
    reason = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)
    preview = serializers.BooleanField(default=False, help_text="Only count; start nothing.")


class BulkReplaySerializer(serializers.ModelSerializer[BulkReplay]):
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    decided_by = serializers.CharField(source="decided_by.username", default=None)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = BulkReplay
        fields = [
            "id", "selection", "rate_per_second", "include_stale", "state", "reason", "matched", "requested_by",
            "decided_by", "created_at", "finished_at", "counts",
        ]  # fmt: skip

    def get_counts(self, job: BulkReplay) -> dict[str, int]:
        return bulk_replay_counts(job)


class BulkReplayList(generics.ListAPIView[BulkReplay]):
    """Bulk replays, newest first. POST starts one (or, with `preview`, only counts)."""

    serializer_class = BulkReplaySerializer
    queryset = BulkReplay.objects.select_related("requested_by", "decided_by").order_by(
        "-created_at"
    )

    @extend_schema(request=BulkSelection, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        given = BulkSelection(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        since, until = failed_window(data, timezone.now())
        selection = Selection(
            system=data["system"], definition=data["definition"], state=data["state"],
            error=data["error"], since=since, until=until,
        )  # fmt: skip
        if data["preview"]:
            return Response(
                bulk_replay_preview(selection=selection, include_stale=data["include_stale"])
            )
        try:
            job = bulk_replay_create(
                selection=selection, rate_per_second=data["rate_per_second"], include_stale=data["include_stale"],
                reason=data["reason"], actor=request.user, now=timezone.now(), request=request,
            )  # fmt: skip
        except ReplayRefused as refused:
            return refusal(refused)
        return Response(BulkReplaySerializer(job).data, status=201)


class BulkReplayDetail(generics.RetrieveAPIView[BulkReplay]):
    """One bulk replay with its counts: sent, failed, in doubt, skipped, waiting."""

    serializer_class = BulkReplaySerializer
    queryset = BulkReplay.objects.select_related("requested_by", "decided_by")
    lookup_url_kwarg = "bulk_id"


def bulk_control_view(action: str) -> Any:
    class BulkControl(APIView):
        @extend_schema(
            request=Decision, responses=BulkReplaySerializer, operation_id=f"bulk_replay_{action}"
        )
        def post(self, request: Request, bulk_id: UUID) -> Response:
            given = Decision(data=request.data)
            given.is_valid(raise_exception=True)
            try:
                job = bulk_replay_control(
                    job_id=str(bulk_id), action=action, actor=request.user, now=timezone.now(),
                    reason=given.validated_data["reason"], request=request,
                )  # fmt: skip
            except ReplayRefused as refused:
                return refusal(refused)
            return Response(BulkReplaySerializer(job).data)

    BulkControl.__doc__ = f"{action.capitalize()} a bulk replay."
    BulkControl.__name__ = f"BulkReplay{action.capitalize()}"
    return BulkControl.as_view()
