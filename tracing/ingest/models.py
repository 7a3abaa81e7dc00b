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
    # Only for a record or dead letter with neither correlation nor trace: its message may
    # still join a flow through a span that carries the same message ID.
    message_id = models.TextField(null=True)  # noqa: DJ001
    # Spans only: when the new spans start, first to last, for the trace's time range.
    first_start = models.DateTimeField(null=True)
    last_start = models.DateTimeField(null=True)
    touched_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.correlation_id or bytes(self.trace_id or b"").hex()


class RawBody(models.Model):
    """A request body exactly as the sender's payload arrived (after gzip), stored once by digest.

    Each audit record points here and to its position, so the normalised columns can always
    be checked against what was sent.
    """

    digest = models.BinaryField(max_length=32, primary_key=True)
    content_type = models.TextField()
    body = models.BinaryField()
    sender = models.TextField()
    received_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return bytes(self.digest).hex()


class RecordKey(models.Model):
    """(sender, record_id) → the content it was first stored with.

    The record table is partitioned by time, and PostgreSQL can only enforce uniqueness
    within a partition; this table enforces it across all of them, whatever the partitioning.
    """

    pk = models.CompositePrimaryKey("sender", "record_id")
    sender = models.TextField()
    record_id = models.TextField()
    content_digest = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"{self.sender}/{self.record_id}"


class AuditRecord(models.Model):
    """One thing the runtime did to one message. Partitioned by day of occurred_at."""

    pk = models.CompositePrimaryKey("id", "occurred_at")
    id = models.BigIntegerField()
    sender = models.TextField()
    record_id = models.TextField()
    occurred_at = models.DateTimeField()
    system = models.TextField()
    step = models.TextField()
    event = models.TextField()
    message_id = models.TextField(null=True)  # noqa: DJ001
    correlation_id = models.TextField(null=True)  # noqa: DJ001
    trace_id = models.BinaryField(max_length=16, null=True)
    span_id = models.BinaryField(max_length=8, null=True)
    business_keys = models.JSONField()
    payload = models.BinaryField(null=True)
    payload_digest = models.BinaryField(max_length=32, null=True)
    content_type = models.TextField()
    headers = models.JSONField()
    error = models.TextField()
    counts_expected = models.BigIntegerField(null=True)
    counts_processed = models.BigIntegerField(null=True)
    source = models.TextField()
    raw_body = models.ForeignKey(RawBody, on_delete=models.DO_NOTHING, db_constraint=False)
    raw_position = models.IntegerField()
    received_at = models.DateTimeField()

    class Meta:
        db_table = "ingest_record"

    def __str__(self) -> str:
        return f"{self.system} {self.step} {self.event} ({self.record_id})"


class DeadLetter(models.Model):
    """A message the runtime gave up on, kept with everything needed to send it again.

    Keyed by (sender, message_key): the message ID, or the payload's digest when a message
    has none. A message that dies again (after a replay) reopens this row and adds to its
    history instead of making a second one.
    """

    class Transport(models.TextChoices):
        HTTP = "http"
        AMQP = "amqp"
        REDIS = "redis"

    class State(models.TextChoices):
        NEW = "new"
        REPLAY_REQUESTED = "replay_requested"
        REPLAYED = "replayed"
        IN_DOUBT = "in_doubt"
        RESOLVED = "resolved"
        DISCARDED = "discarded"
        POISON = "poison"

    sender = models.TextField()
    message_key = models.TextField()
    message_id = models.TextField(blank=True)
    correlation_id = models.TextField(null=True)  # noqa: DJ001 - NULL: not known
    system = models.TextField()
    transport = models.CharField(max_length=10, choices=Transport.choices)
    destination = models.JSONField()
    headers = models.JSONField(default=dict)
    # Transport properties beyond headers (AMQP delivery_mode, priority, type, reply_to ...),
    # so a replay can rebuild the message as it was.
    properties = models.JSONField(default=dict)
    payload = models.BinaryField()
    payload_digest = models.BinaryField(max_length=32)
    content_type = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.IntegerField(default=0)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    history = models.JSONField(default=list)
    state = models.CharField(max_length=20, choices=State.choices, default=State.NEW)
    # Changes whenever the dead letter does; a replay request names the version it saw.
    version = models.IntegerField(default=1)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sender", "message_key"], name="dead_letter_per_message"
            )
        ]
        indexes = [
            models.Index(fields=["correlation_id"], name="dead_letter_correlation"),
            models.Index(fields=["message_id"], name="dead_letter_message"),
            models.Index(
                fields=["system", "state", "last_failed_at"], name="dead_letter_system_state"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system} {self.message_key} ({self.state})"


class SenderMinute(models.Model):
    """How many rows a sender delivered on one stream in one minute: the dashboard's ingest rate.

    Written by one upsert per ingest request, outside the ingest transaction (activity.py),
    so the hot row of the current minute is locked only for that statement.
    """

    class Stream(models.TextChoices):
        SPANS = "spans"
        RECORDS = "records"
        DEAD_LETTERS = "dead_letters"

    pk = models.CompositePrimaryKey("sender", "stream", "minute")
    sender = models.TextField()
    stream = models.CharField(max_length=12, choices=Stream.choices)
    minute = models.DateTimeField()  # the start of the minute
    accepted = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.sender} {self.stream} {self.minute:%Y-%m-%d %H:%M}: {self.accepted}"
