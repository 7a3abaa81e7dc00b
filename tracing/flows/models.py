"""Flow definitions: the steps a business flow is expected to take, and who owns them.

Editing a definition makes a new version; instances keep the version they started under.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
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
