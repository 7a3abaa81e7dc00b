"""Flow definitions: the steps a business flow is expected to take, and who owns them.

Editing a definition makes a new version; instances keep the version they started under.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now


class Owner(models.Model):
    """A team that answers for systems and flows, and how to reach it."""

    team = models.CharField(max_length=100, unique=True)
    email = models.EmailField(blank=True)
    webhook_url = models.URLField(blank=True)

    def __str__(self) -> str:
        return self.team


class System(models.Model):
    """ERP, WMS, MES, QMS, TMS, FIN ...: who owns it and where its runbook is."""

    name = models.CharField(max_length=50, unique=True)
    owner = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="systems")
    runbook_url = models.URLField(blank=True)

    def __str__(self) -> str:
        return self.name


class BusinessCalendar(models.Model):
    """When silence is an alarm: working days, opening hours and holidays in one time zone."""

    name = models.CharField(max_length=50, unique=True)
    timezone = models.CharField(max_length=64, default="UTC")
    working_days = ArrayField(models.SmallIntegerField(), default=list)  # 0 = Monday
    opens = models.TimeField()
    closes = models.TimeField()
    holidays = ArrayField(models.DateField(), default=list, blank=True)

    def __str__(self) -> str:
        return self.name


class FlowDefinition(models.Model):
    class Kind(models.TextChoices):
        INSTANCE = "instance"  # started by a business event (an order)
        SCHEDULED = "scheduled"  # expected on a schedule (the stock export)

    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    is_current = models.BooleanField(default=True)
    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.INSTANCE)
    owner = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="flow_definitions")
    runbook_url = models.URLField(blank=True)
    starts_with = models.SlugField(max_length=100)
    every_seconds = models.PositiveIntegerField(null=True, blank=True)
    cron = models.CharField(max_length=100, blank=True)
    grace_seconds = models.PositiveIntegerField(default=0)
    # {"at_least": 20, "at_most": null, "per_seconds": 3600, "calendar": "weekdays"}
    volume = models.JSONField(null=True, blank=True)
    # The definition as imported, canonical: a new version is made only when it changes.
    source = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="flow_definition_version"),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(is_current=True),
                name="flow_definition_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class FlowStep(models.Model):
    """One expected step: where it happens, how it is recognised, what it follows, its deadline."""

    class DeadlineFrom(models.TextChoices):
        AFTER = "after"  # the steps it follows
        START = "start"  # the flow's start

    definition = models.ForeignKey(FlowDefinition, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    key = models.SlugField(max_length=100)
    title = models.CharField(max_length=200)
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="steps")
    # {"span": "order.create", "attributes": {...}} or {"record": {"step": ..., "event": ...}}
    match = models.JSONField()
    after = ArrayField(models.SlugField(max_length=100), default=list, blank=True)
    occurs_min = models.PositiveSmallIntegerField(default=1)
    occurs_max = models.PositiveSmallIntegerField(null=True, blank=True)  # None: any number
    deadline_seconds = models.PositiveIntegerField(null=True, blank=True)
    deadline_from = models.CharField(
        max_length=5, choices=DeadlineFrom.choices, default=DeadlineFrom.AFTER
    )
    optional = models.BooleanField(default=False)
    payload_schema = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["definition", "key"], name="flow_step_key")]

    def __str__(self) -> str:
        return f"{self.definition.name}: {self.title}"


class FlowInstance(models.Model):
    """The flow summary: one row per correlation ID, kept current by the summarizer.

    Pages, search and the dashboard read only this table (and the flow's own facts);
    nothing recomputes a status from raw spans on a page view.
    """

    class Status(models.TextChoices):
        COMPLETED = "completed"
        IN_PROGRESS = "in_progress"
        STALLED = "stalled"
        FAILED = "failed"
        PARTIAL = "partial"

    correlation_id = models.TextField(unique=True)
    # The version the instance started under; later edits of the definition do not move it.
    definition = models.ForeignKey(
        FlowDefinition, on_delete=models.PROTECT, null=True, related_name="instances"
    )
    status = models.CharField(max_length=12, choices=Status.choices)
    started_at = models.DateTimeField()
    last_activity_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True)
    # The step it stopped at (failed, overdue or expected next), and the last step done.
    stopped_at = models.CharField(max_length=100, blank=True)
    last_step = models.CharField(max_length=100, blank=True)
    sentence = models.TextField()
    # When the earliest pending step falls due: beat turns in_progress into stalled then.
    due_at = models.DateTimeField(null=True)
    # {step key: {"state", "count", "first_at", "last_at", "due_at", "late", "backwards"}}
    steps = models.JSONField(default=dict)
    steps_done = ArrayField(models.CharField(max_length=100), default=list)
    systems = ArrayField(models.CharField(max_length=50), default=list)
    deadline_missed = models.BooleanField(default=False)
    span_count = models.IntegerField(default=0)
    record_count = models.IntegerField(default=0)
    dead_letter_count = models.IntegerField(default=0)
    trace_count = models.IntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["status", "last_activity_at"], name="flow_status_activity"),
            models.Index(fields=["definition", "started_at"], name="flow_definition_started"),
            models.Index(fields=["-last_activity_at"], name="flow_last_activity"),
            models.Index(
                fields=["due_at"],
                condition=models.Q(status="in_progress"),
                name="flow_due",
            ),
            GinIndex(fields=["systems"], name="flow_systems"),
            # The dashboard's SLA compliance counts completions at a window's edges.
            models.Index(
                fields=["completed_at"],
                condition=models.Q(status="completed"),
                name="flow_completed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.correlation_id} ({self.status})"


class SpanDigest(models.Model):
    """What a flow's status needs of its spans, as its last full recompute read them, so a
    record naming only the flow rebuilds it without re-reading them (tracing.flows.digests)."""

    correlation_id = models.TextField(primary_key=True)
    digest = models.BinaryField()  # msgpack: tracing.flows.digests.SpanDigest

    def __str__(self) -> str:
        return self.correlation_id


class FlowHour(models.Model):
    """How many instances of a definition version started in one hour (UTC) with a status and
    a set of steps done: the dashboard's counts and funnels, without reading every instance.

    Kept by the summarizer in the transaction that saves the instances, as the difference
    between what the instances were and what they became.
    """

    definition = models.ForeignKey(FlowDefinition, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    status = models.CharField(max_length=12, choices=FlowInstance.Status.choices)
    steps_done = ArrayField(models.CharField(max_length=100), default=list)
    instances = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["definition", "hour", "status", "steps_done"], name="flow_hour_group"
            )
        ]

    def __str__(self) -> str:
        return f"{self.definition_id} {self.hour:%Y-%m-%d %H}h {self.status}: {self.instances}"


class FlowCompletedHour(models.Model):
    """How many instances of a definition version completed in one hour (UTC), and how many of
    them within all their deadlines: the dashboard's SLA compliance. Kept like FlowHour."""

    definition = models.ForeignKey(FlowDefinition, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    finished = models.IntegerField()
    within = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["definition", "hour"], name="flow_completed_hour")
        ]

    def __str__(self) -> str:
        return f"{self.definition_id} {self.hour:%Y-%m-%d %H}h: {self.within}/{self.finished}"


class FlowTrace(models.Model):
    """A trace belongs to a flow: through a correlated span, an audit record or a span link.

    Many-to-many on purpose: a nightly batch trace carrying 500 orders belongs to 500 flows.
    """

    class Via(models.TextChoices):
        CORRELATED = "correlated"  # a span of the trace carries the correlation ID
        RECORD = "record"  # an audit record of the flow names the trace
        LINK = "link"  # a span link joins it to a trace of the flow (an async hop)

    pk = models.CompositePrimaryKey("correlation_id", "trace_id")
    correlation_id = models.TextField()
    trace_id = models.BinaryField(max_length=16)
    via = models.CharField(max_length=10, choices=Via.choices)
    joined_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["trace_id"], name="flow_trace_trace")]

    def __str__(self) -> str:
        return f"{self.correlation_id} ∋ {bytes(self.trace_id).hex()}"


class TraceRange(models.Model):
    """When a trace's spans start, first to last: the daily partitions that hold it.

    Kept from ingest's marks, so reading a trace's spans touches only those partitions
    instead of probing every day kept.
    """

    trace_id = models.BinaryField(max_length=16, primary_key=True)
    first_start = models.DateTimeField()
    last_start = models.DateTimeField()

    def __str__(self) -> str:
        return f"{bytes(self.trace_id).hex()} {self.first_start:%Y-%m-%d} to {self.last_start:%Y-%m-%d}"


class SpanLink(models.Model):
    """A link between two traces, remembered in both directions as the summarizer meets it.

    Spans keep their links in JSON; this table lets a trace that arrives after the span
    that links to it find that span without an index on every span's links.
    """

    pk = models.CompositePrimaryKey("trace_id", "linked_trace_id")
    trace_id = models.BinaryField(max_length=16)
    linked_trace_id = models.BinaryField(max_length=16)

    class Meta:
        indexes = [models.Index(fields=["linked_trace_id"], name="span_link_linked")]

    def __str__(self) -> str:
        return f"{bytes(self.trace_id).hex()} → {bytes(self.linked_trace_id).hex()}"


class FlowKey(models.Model):
    """A business key (order, shipment, invoice, batch number) that finds a flow."""

    pk = models.CompositePrimaryKey("value", "name", "correlation_id")
    value = models.TextField()
    name = models.TextField()
    correlation_id = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["correlation_id"], name="flow_key_flow")]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class Missing(models.Model):
    """An expected event that did not come: a scheduled run, or a window's volume.

    A scheduled flow has at most one open row, updated as more runs are missed and closed
    when a run arrives; a volume shortfall is one row per window.
    """

    class Kind(models.TextChoices):
        SCHEDULE = "schedule"
        VOLUME = "volume"

    definition = models.ForeignKey(FlowDefinition, on_delete=models.PROTECT, related_name="+")
    definition_name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    window_start = models.DateTimeField()  # schedule: the last run seen; volume: the window
    window_end = models.DateTimeField(null=True)
    overdue_since = models.DateTimeField()
    count = models.IntegerField()  # runs missed, or instances seen in the window
    sentence = models.TextField()
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["definition_name"],
                condition=models.Q(kind="schedule", cleared_at=None),
                name="missing_one_open_schedule",
            ),
            models.UniqueConstraint(
                fields=["definition_name", "window_start"],
                condition=models.Q(kind="volume"),
                name="missing_volume_window",
            ),
        ]

    def __str__(self) -> str:
        return self.sentence
