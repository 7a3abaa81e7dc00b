"""Forms for rules, channels, allowed hosts and silences: every problem named, nothing saved."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.db import models

from console.models import IngestToken
from tracing.alerts.channels import webhook_url_problem
from tracing.alerts.models import AlertRule, Channel
from tracing.flows.documents import duration_text
from tracing.flows.models import FlowDefinition, FlowStep, System

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 60}
# What each kind needs besides a name.
NEEDS: dict[str, tuple[str, ...]] = {
    AlertRule.Kind.DRIFT: ("definition", "step", "to_step", "duration"),
    AlertRule.Kind.SENDER_SILENT: ("duration",),
}


# A rule or a silence longer than a year is a mistake; it also keeps dates and columns in range.
DURATION_LIMIT_DAYS = 366


def duration_seconds(text: str) -> int:
    """ "90s", "15m", "2h", "1d"; a bare number is minutes."""
    match = _DURATION.match(text)
    if not match:
        raise forms.ValidationError(f"{text!r} is not a duration such as 90s, 15m, 2h or 1d.")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > DURATION_LIMIT_DAYS * 86400:
        raise forms.ValidationError(f"{text!r} is longer than {DURATION_LIMIT_DAYS} days.")
    return seconds


class AlertRuleForm(forms.ModelForm):
    duration = forms.CharField(
        required=False,
        help_text="Drift: sitting longer than this. Sender silent: nothing for this long. "
        "e.g. 30m, 2h.",
    )

    class Meta:
        model = AlertRule
        fields = [
            "name", "kind", "definition", "system", "step", "to_step", "sender", "threshold",
            "to_owner", "channels", "is_active",
        ]  # fmt: skip
        labels = {"step": "Step (stopped at; drift: from)", "to_step": "Drift: to step"}
        help_texts = {
            "threshold": "Stalled/failed: at least this many. Drift, dead letters: more than this many.",
            "to_owner": "Also tell the owner of the system or flow definition concerned.",
        }
        widgets = {"channels": forms.CheckboxSelectMultiple}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.duration_seconds:
            self.initial["duration"] = duration_text(self.instance.duration_seconds)

    def clean_duration(self) -> int | None:
        text = self.cleaned_data.get("duration", "").strip()
        return duration_seconds(text) if text else None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind", "")
        for name in NEEDS.get(kind, ()):
            if not cleaned.get(name) and name not in self.errors:
                self.add_error(name, "This kind of rule needs it.")
        self._check_references(cleaned)
        return cleaned

    def _check_references(self, cleaned: dict[str, Any]) -> None:
        name, system = cleaned.get("definition"), cleaned.get("system")
        if name and not FlowDefinition.objects.filter(name=name, is_current=True).exists():
            self.add_error("definition", f"There is no flow definition named {name!r}.")
            name = None
        if system and not System.objects.filter(name=system).exists():
            self.add_error("system", f"There is no system named {system!r}.")
        for field in ("step", "to_step"):
            key = cleaned.get(field)
            if key and not name:
                self.add_error(field, "A step needs the flow definition it belongs to.")
            elif (
                key
                and not FlowStep.objects.filter(
                    definition__name=name, definition__is_current=True, key=key
                ).exists()
            ):
                self.add_error(field, f"{key!r} is not a step of {name}.")
        sender = cleaned.get("sender")
        if sender and not IngestToken.objects.filter(sender=sender).exists():
            self.add_error(
                "sender", f"No ingest token was ever issued to a sender named {sender!r}."
            )

    def save(self, commit: bool = True) -> AlertRule:
        self.instance.duration_seconds = self.cleaned_data.get("duration")
        return super().save(commit)


def _https_assumed(field: models.Field, **kwargs: Any) -> forms.Field | None:
    """A webhook address typed without a scheme is the public HTTPS one, as Django 6 assumes."""
    if isinstance(field, models.URLField):
        kwargs["assume_scheme"] = "https"
    return field.formfield(**kwargs)


class ChannelForm(forms.ModelForm):
    class Meta:
        model = Channel
        fields = ["name", "kind", "url", "email"]
        labels = {"url": "Webhook URL (Slack, Teams or your own)", "email": "E-mail address"}
        formfield_callback = _https_assumed

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if kind == Channel.Kind.WEBHOOK:
            url = cleaned.get("url")
            if not url and "url" not in self.errors:
                self.add_error("url", "A webhook channel needs its URL.")
            elif url and (problem := webhook_url_problem(url)):
                self.add_error("url", problem)
            cleaned["email"] = ""
        elif kind == Channel.Kind.EMAIL:
            if not cleaned.get("email") and "email" not in self.errors:
                self.add_error("email", "An e-mail channel needs its address.")
            cleaned["url"] = ""
        return cleaned


class WebhookHostForm(forms.Form):
    host = forms.CharField(
        max_length=255,
        help_text='"hooks.slack.com", ".webhook.office.com" (any subdomain), "10.0.0.5:8080".',
    )
    note = forms.CharField(max_length=200, required=False)

    def clean_host(self) -> str:
        host = self.cleaned_data["host"].strip().lower()
        if not re.fullmatch(r"\.?[a-z0-9.-]+(:\d{1,5})?", host):
            raise forms.ValidationError(f"{host!r} is not a host name (with an optional :port).")
        return host


class SilenceForm(forms.Form):
    rule = forms.ModelChoiceField(
        AlertRule.objects.order_by("name"), required=False, empty_label="Every rule"
    )
    subject = forms.CharField(max_length=255, required=False, help_text="Empty: every subject.")
    duration = forms.CharField(initial="2h", help_text="How long, e.g. 30m, 2h, 1d.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))

    def clean_duration(self) -> int:
        seconds = duration_seconds(self.cleaned_data["duration"])
        if seconds < 60:
            raise forms.ValidationError("A silence lasts at least a minute.")
        return seconds
