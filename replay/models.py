"""Replays: the database is the queue of record.

A replay attempt is a row; a worker claims it with a conditional update, so however often a
task runs, one attempt is sent at most once. At most one attempt per dead letter is open
(a partial unique index), so twenty clicks make one attempt.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Now

from tracing.ingest.models import DeadLetter

REPLAY_SCHEMES = ("http", "https", "amqp", "amqps", "redis", "rediss", "redis+socket")


def prefix_problem(prefix: str) -> str | None:
    """Why an allow-list prefix would let a replay reach more than it names, if it would.

    `http://wms.internal` would also admit `http://wms.internal.evil.example/`: a prefix must
    name a scheme and a host and end with '/'.
    """
    scheme, _, rest = prefix.partition("://")
    if scheme not in REPLAY_SCHEMES or not rest:
        return f"{prefix!r} must start with one of {', '.join(s + '://' for s in REPLAY_SCHEMES)} and a host"
    if not prefix.endswith("/"):
        return (
            f"{prefix!r} must end with '/', or it also admits hosts and paths that only begin alike"
        )
    return None


def prefix_check(prefix: str) -> None:
    problem = prefix_problem(prefix)
    if problem:
        raise ValidationError(problem)


# The highest rate a bulk job or an auto-replay rule may ask for (a bulk job's 0 means no
# limit); it keeps a job's chunk arithmetic far from PostgreSQL's bigint range.
RATE_PER_SECOND_MAX = 10_000


class Destination(models.Model):
    """A target replays may reach, as an address prefix, and what it promises.

    `http://wms.internal/`, `amqp://broker/%2F/queue/orders`, `redis://cache/0/stream/stock`:
    a replay's destination must start with one of these (or with a prefix from
    TIDELINE_REPLAY_ALLOWED_DESTINATIONS, which promise nothing).
    """

    address_prefix = models.CharField(
        max_length=500,
        unique=True,
        validators=[prefix_check],
        help_text="Ends with '/': http://wms.internal/, amqp://broker/%2F/queue/orders",
    )
    # The target drops a message whose Idempotency-Key it has seen: a replay cannot double it.
    deduplicates = models.BooleanField(default=False)
    # Receiving the message does something outside (a payment, an e-mail, a stock level).
    side_effects = models.BooleanField(default=True)
    requires_approval = models.BooleanField(default=False)
    note = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return self.address_prefix

    def clean(self) -> None:
        # Auto-replay rules send here without approval only because the target deduplicates.
        rules = self.auto_replay_rules.values_list("name", flat=True) if self.pk else []
        if not self.deduplicates and rules:
            raise ValidationError({"deduplicates": (
                f"The auto-replay rules {', '.join(rules)} replay here without approval because "
                "this target deduplicates; delete them or move them elsewhere first."
            )})  # fmt: skip


class ApprovalRule(models.Model):
    """Replays for this system or flow definition need a second operator's approval."""

    class Scope(models.TextChoices):
        SYSTEM = "system"
        DEFINITION = "definition"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    name = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "name"], name="approval_rule_once")]

    def __str__(self) -> str:
        return f"{self.scope} {self.name}"


OPEN_STATES = ("pending_approval", "queued", "sending")


class BulkReplay(models.Model):
    """Many dead letters replayed by filter, in chunks driven from this row, at a rate.

    The driver task holds a lease on the row while it takes a chunk; a beat sweeper restarts
    a job whose driver died. Each dead letter becomes a replay attempt of this job (or a
    skipped one, with the reason), created with the cursor in one transaction.
    """

    class State(models.TextChoices):
        PENDING_APPROVAL = "pending_approval"
        RUNNING = "running"
        PAUSED = "paused"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        DONE = "done"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # {"system": "WMS", "error": "503", "since": iso, "until": iso, "states": ["new"]}
    selection = models.JSONField()
    rate_per_second = models.FloatField(default=0)  # 0: as fast as the workers go
    include_stale = models.BooleanField(default=False)
    state = models.CharField(max_length=20, choices=State.choices)
    reason = models.TextField(blank=True)
    matched = models.IntegerField(default=0)
    cursor = models.BigIntegerField(default=0)  # the highest dead letter ID taken so far
    lease_until = models.DateTimeField(null=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"bulk replay {self.id} ({self.state})"


class ReplayAttempt(models.Model):
    class State(models.TextChoices):
        PENDING_APPROVAL = "pending_approval"
        QUEUED = "queued"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed"
        IN_DOUBT = "in_doubt"  # may have arrived: never resent automatically
        REJECTED = "rejected"
        CANCELLED = "cancelled"
        SKIPPED = "skipped"  # a bulk job passed it over: the verdict says why

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.PROTECT, related_name="replays")
    bulk = models.ForeignKey(
        BulkReplay, on_delete=models.PROTECT, null=True, blank=True, related_name="attempts"
    )
    dead_letter_version = models.IntegerField()  # the version the operator saw
    # Exactly what is (or was) sent: the stored payload or the operator's repair of it.
    payload = models.BinaryField()
    payload_digest = models.BinaryField(max_length=32)
    repaired = models.BooleanField(default=False)
    headers = models.JSONField(default=dict)
    content_type = models.TextField(blank=True)
    transport = models.CharField(max_length=10)
    destination = models.JSONField()
    address = models.TextField()
    redirected = models.BooleanField(default=False)
    to_exchange = models.BooleanField(default=False)
    # Stable per dead letter and payload: a deduplicating target drops a second arrival.
    idempotency_key = models.CharField(max_length=80)
    verdict = models.JSONField(default=dict)
    state = models.CharField(max_length=20, choices=State.choices)
    reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    requested_at = models.DateTimeField(db_default=Now())
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True)
    decision_reason = models.TextField(blank=True)
    lease_until = models.DateTimeField(null=True)
    sent_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    outcome = models.TextField(blank=True)
    outcome_status = models.IntegerField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["dead_letter"],
                condition=models.Q(state__in=OPEN_STATES),
                name="replay_one_open_attempt",
            )
        ]
        indexes = [
            models.Index(
                fields=["state", "lease_until"],
                condition=models.Q(state__in=["queued", "sending"]),
                name="replay_open",
            ),
            models.Index(fields=["dead_letter", "-requested_at"], name="replay_of_dead_letter"),
            models.Index(fields=["bulk", "state"], name="replay_of_bulk"),
        ]

    def __str__(self) -> str:
        return f"replay {self.id} of {self.dead_letter_id} ({self.state})"


class AutoReplayRule(models.Model):
    """When a target that was down answers its health URL again, replay its dead letters.

    Opt-in per destination, and only where the destination deduplicates by Idempotency-Key:
    that promise is why nobody approves these replays. The job the rule starts is an ordinary
    bulk replay (same safety checks and skips, same trail); the rule's name is its actor.
    """

    name = models.SlugField(max_length=100, unique=True, help_text="Journaled as the actor.")
    destination = models.ForeignKey(
        Destination, on_delete=models.PROTECT, related_name="auto_replay_rules"
    )
    health_url = models.CharField(
        max_length=500,
        help_text="GET, 2xx means healthy; must be on the replay allow-list: "
        "http://wms.internal/health",
    )
    error_class = models.CharField(
        max_length=200,
        help_text="Text the dead letter's error contains, as in the bulk replay filter "
        "(case-insensitive): 503, Connection refused, timed out",
    )
    rate_per_second = models.FloatField(
        default=5, help_text="Messages per second: a target that just came back is not flooded."
    )
    enabled = models.BooleanField(default=True)
    owner = models.ForeignKey(
        "flows.Owner", on_delete=models.PROTECT, related_name="auto_replay_rules"
    )
    # What the last poll saw, for the admin list: "HTTP 503 Service Unavailable", "HTTP 200 OK".
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_check_healthy = models.BooleanField(null=True, editable=False)
    last_check = models.CharField(max_length=500, blank=True, editable=False)
    last_job = models.ForeignKey(
        BulkReplay, on_delete=models.SET_NULL, null=True, blank=True, editable=False,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rate_per_second__gt=0), name="auto_replay_rate_positive"
            )
        ]

    def __str__(self) -> str:
        return f"auto-replay {self.name}"

    @property
    def actor(self) -> str:
        return f"auto-replay rule {self.name}"

    def clean(self) -> None:
        from replay.autoreplay import auto_replay_rule_problems

        problems = auto_replay_rule_problems(self)
        if problems:
            raise ValidationError(problems)
