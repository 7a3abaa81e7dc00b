"""What senders deliver: spans, and the marks that tell the flow summarizer what changed.

Spans live in a table partitioned by day of start time (partitions.py), which the
migration creates in SQL because Django cannot declare partitioning; Django still owns the
model's state, so flush and makemigrations treat it like any other table. Rows are
written only by COPY in services.py.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Resource(models.Model):
    """An OpenTelemetry resource (service.name, host, version ...), stored once per content."""

    digest = models.BinaryField(max_length=32, unique=True)
    service_name = models.TextField()
    attributes = models.JSONField()

    def __str__(self) -> str:
        return self.service_name


class Span(models.Model):
    # start_time is in the key because the table is partitioned by it; the key is also
    # what makes an exporter's retry of the same span a no-op.
    pk = models.CompositePrimaryKey("trace_id", "span_id", "start_time")
    trace_id = models.BinaryField(max_length=16)
    span_id = models.BinaryField(max_length=8)
    parent_span_id = models.BinaryField(max_length=8, null=True)
    name = models.TextField()
    kind = models.SmallIntegerField()
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    duration_ns = models.BigIntegerField()
    status_code = models.SmallIntegerField()
    status_message = models.TextField()
    service_name = models.TextField()
    resource = models.ForeignKey(Resource, on_delete=models.DO_NOTHING, db_constraint=False)
    scope_name = models.TextField()
    attributes = models.JSONField()
    events = models.JSONField()
    links = models.JSONField()
    correlation_id = models.TextField(null=True)  # noqa: DJ001 - NULL: none; partial indexes skip it
    message_id = models.TextField(null=True)  # noqa: DJ001
    business_keys = models.JSONField()
    sender = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        db_table = "ingest_span"

    def __str__(self) -> str:
        return f"{self.name} ({bytes(self.trace_id).hex()})"


class FlowTouch(models.Model):
    """A trace or correlation ID that ingest changed, for the summarizer to drain.

    Append-only and written in the same transaction as the rows, so nothing is lost if the
    broker hiccups; the summarizer takes them with FOR UPDATE SKIP LOCKED and deletes them.
    """

    trace_id = models.BinaryField(max_length=16, null=True)
    correlation_id = models.TextField(null=True)  # noqa: DJ001 - NULL: none; partial indexes skip it
    touched_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.correlation_id or bytes(self.trace_id or b"").hex()
