"""Alerts: what to watch (rules), what was found (incidents), and who was told (notifications).

An incident is one per rule and subject ("order-to-invoice at certificate_approved", "QMS",
"runtime-prod"), however many flows it covers; it grows without re-notifying and tells each
channel once more when it clears. Notifications are rows before they are messages: the broker
wakes a worker, the row says what to send, and a sweeper retries what a dead worker left.
"""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now

from tracing.flows.models import Owner


class WebhookHost(models.Model):
    """A host a webhook channel may post to, kept by admins besides the setting's list."""

    host = models.CharField(max_length=255, unique=True)  # "hooks.slack.com", ".office.com"
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.host


class Channel(models.Model):
    """Where notifications go: a signed webhook or an e-mail address.

    An owner's own channels (its e-mail, its webhook) are made on first use and marked with
    `owner`; every other channel is named by an admin and chosen per rule.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=500, blank=True)
    email = models.EmailField(blank=True)
    # Kept as it is, because signing needs it; shown once, when made or rotated.
    secret = models.CharField(max_length=100, blank=True)
    secret_prefix = models.CharField(max_length=12, blank=True)
    owner = models.ForeignKey(
        Owner, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_channels"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "kind"],
                condition=models.Q(owner__isnull=False),
                name="alert_channel_one_per_owner_kind",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return self.url if self.kind == self.Kind.WEBHOOK else self.email


class AlertRule(models.Model):
    class Kind(models.TextChoices):
        FLOW_STALLED = "flow_stalled", "Flows stalled"
        FLOW_FAILED = "flow_failed", "Flows failed"
        MISSING = "missing", "Scheduled run or volume missing"
        DRIFT = "drift", "Flows sitting between two steps"
        DEAD_LETTERS = "dead_letters", "Dead letters waiting"
        SENDER_SILENT = "sender_silent", "Sender silent"
        LEDGER = "ledger", "Ledger verification failing"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Filters by name, not by row: a flow definition is versioned, a rule follows all versions.
    definition = models.SlugField(max_length=100, blank=True)
    system = models.CharField(max_length=50, blank=True)
    step = models.SlugField(max_length=100, blank=True)  # stalled/failed at; drift: from
    to_step = models.SlugField(max_length=100, blank=True)  # drift: never reached
    sender = models.CharField(max_length=100, blank=True)
    # Stalled/failed: at least this many; drift, dead letters: more than this many.
    threshold = models.PositiveIntegerField(default=1)
    # Drift: sitting longer than this; sender silent: nothing for this long.
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    to_owner = models.BooleanField(default=True)
    channels = models.ManyToManyField(Channel, blank=True, related_name="rules")
    is_active = models.BooleanField(default=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.name


class IncidentState(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    IGNORED = "ignored"


ACTIVE_STATES = [IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.IGNORED]


class Incident(models.Model):
    State = IncidentState

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    subject = models.CharField(max_length=255)
    state = models.CharField(max_length=12, choices=State.choices, default=State.OPEN)
    summary = models.TextField()
    count = models.IntegerField()
    peak_count = models.IntegerField()
    oldest_at = models.DateTimeField(null=True)
    # The owner told by default (the system's or the definition's), None when there is none.
    owner = models.ForeignKey(Owner, null=True, on_delete=models.SET_NULL, related_name="+")
    # The flows it covers (capped), so a flow page can answer "was anyone alerted?".
    correlation_ids = ArrayField(models.TextField(), default=list)
    # Kind-specific facts: the dead letters' highest id, the drift's steps, the definition...
    details = models.JSONField(default=dict)
    opened_at = models.DateTimeField()
    # When its channels were told it opened; None while silenced or not yet told.
    notified_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledged_at = models.DateTimeField(null=True)
    ignored_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=models.Q(state__in=["open", "acknowledged", "ignored"]),
                name="alert_incident_one_active",
            )
        ]
        indexes = [
            models.Index(fields=["state", "-opened_at"], name="alert_incident_state"),
            GinIndex(fields=["correlation_ids"], name="alert_incident_flows"),
        ]

    def __str__(self) -> str:
        return f"{self.rule.name}: {self.subject} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class Notification(models.Model):
    """One message to one channel about one turn of an incident: opened, or resolved.

    Unique per incident, channel and event, so however often evaluation runs a channel hears
    of an incident once; the body is frozen when made, so every retry carries the same
    delivery ID and the same bytes.
    """

    class Event(models.TextChoices):
        OPENED = "opened"
        RESOLVED = "resolved"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notifications")
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="notifications")
    event = models.CharField(max_length=8, choices=Event.choices)
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    body = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.IntegerField(default=0)
    # Pending: when a worker may try next (also the lease a worker takes while it sends).
    next_attempt_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "channel", "event"], name="alert_notification_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state="pending"),
                name="alert_notification_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.channel.name} ({self.state})"


class DeliveryAttempt(models.Model):
    class Outcome(models.TextChoices):
        DELIVERED = "delivered"
        FAILED = "failed"

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    status_code = models.IntegerField(null=True)
    error = models.TextField(blank=True)
    duration_ms = models.IntegerField()

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.outcome}"


class Silence(models.Model):
    """No notifications for a rule (or every rule), optionally one subject, until it expires.

    Incidents still open and grow while silenced; a channel hears of one still open when the
    silence ends."""

    rule = models.ForeignKey(
        AlertRule, null=True, blank=True, on_delete=models.CASCADE, related_name="silences"
    )
    subject = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    starts_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return f"{self.rule or 'all rules'} until {self.expires_at:%Y-%m-%d %H:%M}"
