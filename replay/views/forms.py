"""The console's forms for dead letters, replays and bulk replays."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django import forms

from replay.models import RATE_PER_SECOND_MAX
from replay.selectors import AGE_HELP, AgeInvalid, age_parse, failed_window, window_problem
from tracing.flows.models import FlowDefinition
from tracing.ingest.models import DeadLetter

STATE_CHOICES = [
    ("", "any state"), *((state, state.replace("_", " ")) for state in DeadLetter.State.values)
]  # fmt: skip
# Offered as the operator types an age; any duration such as 90m or 1h30m is understood.
AGE_SUGGESTIONS = ("15m", "1h", "6h", "12h", "1d", "2d", "7d")


class AgeField(forms.CharField):
    """A duration as an operator writes it: `1h`, `30m`, `2d` (see replay.selectors)."""

    def to_python(self, value: Any) -> timedelta | None:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return None
        try:
            return age_parse(text)
        except AgeInvalid as invalid:
            raise forms.ValidationError(str(invalid)) from None

    def prepare_value(self, value: Any) -> Any:
        return value if not isinstance(value, timedelta) else _age_text(value)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        return {**super().widget_attrs(widget), "placeholder": "e.g. 1h", "list": "age-suggestions",
                "size": 6, "title": AGE_HELP}  # fmt: skip


def _age_text(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


class FailedWindowForm(forms.Form):
    """When the dead letters last failed: times, ages counted back from now, or both."""

    age = AgeField(required=False, label="Failed in the last")
    older_than = AgeField(required=False, label="Failed longer ago than")
    since = forms.DateTimeField(
        required=False, label="Failed since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip
    until = forms.DateTimeField(
        required=False, label="Failed before",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        problem = window_problem(*failed_window(cleaned))
        if problem:
            raise forms.ValidationError(f"The time window is empty: {problem}.")
        return cleaned


class DeadLetterFilter(FailedWindowForm):
    system = forms.ChoiceField(required=False)
    definition = forms.ChoiceField(required=False, label="Flow")
    state = forms.ChoiceField(required=False, choices=STATE_CHOICES)
    error = forms.CharField(required=False, max_length=200, label="Error text")
    field_order = ["system", "definition", "state", "error", "age", "older_than", "since", "until"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        systems = DeadLetter.objects.order_by("system").values_list("system", flat=True).distinct()
        flows = FlowDefinition.objects.filter(is_current=True).order_by("title")
        cast(forms.ChoiceField, self.fields["system"]).choices = [
            ("", "any system"), *((system, system) for system in systems)
        ]  # fmt: skip
        cast(forms.ChoiceField, self.fields["definition"]).choices = [
            ("", "any flow"), *flows.values_list("name", "title")
        ]  # fmt: skip


class ReplayForm(forms.Form):
    version = forms.IntegerField()
    payload = forms.CharField(required=False, strip=False)
    reason = forms.CharField(required=False, max_length=2000)
    confirm_stale = forms.BooleanField(required=False)
    action = forms.ChoiceField(
        required=False, choices=[("replay", "Replay"), ("dry_run", "Dry run")]
    )


class CloseForm(forms.Form):
    version = forms.IntegerField()
    action = forms.ChoiceField(choices=[("resolve", "Resolve"), ("discard", "Discard")])
    # Required by the service, which says so in words the page shows.
    reason = forms.CharField(required=False, max_length=2000)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=2000)


class BulkStartForm(forms.Form):
    """A bulk replay as previewed: the filter with its times fixed, and how to replay."""

    system = forms.CharField(required=False, max_length=50, widget=forms.HiddenInput)
    definition = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)
    state = forms.ChoiceField(required=False, choices=STATE_CHOICES, widget=forms.HiddenInput)
    error = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)
    since = forms.DateTimeField(required=False, widget=forms.HiddenInput)
    until = forms.DateTimeField(required=False, widget=forms.HiddenInput)
    rate_per_second = forms.FloatField(
        min_value=0,
        max_value=RATE_PER_SECOND_MAX,
        initial=10,
        label="Rate (messages per second; 0: no limit)",
    )
    include_stale = forms.BooleanField(
        required=False, label="Replay stale ones too (a newer message already reached the target)"
    )
    reason = forms.CharField(required=False, max_length=2000, label="Reason (shown on the job)")


class BulkControlForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000)
