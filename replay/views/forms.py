"""The console's forms for dead letters, replays and bulk replays."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from tracing.flows.models import FlowDefinition
from tracing.ingest.models import DeadLetter


class DeadLetterFilter(forms.Form):
    system = forms.ChoiceField(required=False)
    definition = forms.ChoiceField(required=False, label="Flow")
    state = forms.ChoiceField(
        required=False,
        choices=[("", "any state"), *((state, state.replace("_", " ")) for state in DeadLetter.State.values)],
    )  # fmt: skip
    error = forms.CharField(required=False, max_length=200, label="Error text")
    since = forms.DateTimeField(
        required=False, label="Failed since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip

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
