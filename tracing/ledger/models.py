"""The ledger's tables: a queue of what is to be logged, and the insert-only log itself.

Entries, nodes and checkpoints refuse UPDATE, DELETE and TRUNCATE by trigger (migration
0001), and the application's database role may only SELECT and INSERT them (roles.py).
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class Kind(models.TextChoices):
    RECORD = "record"
    DEAD_LETTER = "dead_letter"
    JOURNAL = "journal"


class PendingEntry(models.Model):
    """Something stored that the sequencer has yet to log; written by triggers on the source
    tables in the source row's own transaction, deleted once sequenced."""

    kind = models.CharField(max_length=16, choices=Kind.choices)
    source_id = models.BigIntegerField()
    # Records: their occurred_at, so the sequencer reads only the partitions that hold them.
    # Dead letters: the death's number in the dead letter's history (1 = first).
    source_at = models.DateTimeField(null=True)
    source_version = models.IntegerField(null=True)
    queued_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.kind}:{self.source_id}"


class Entry(models.Model):
    """One sequenced entry: index i of the Merkle tree, exactly the canonical bytes hashed."""

    index = models.BigIntegerField(primary_key=True)
    body = models.BinaryField()
    leaf_hash = models.BinaryField(max_length=32)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    source_id = models.BigIntegerField()
    at = models.DateTimeField()
    system = models.TextField(null=True)  # noqa: DJ001 - NULL: an entry of no system (journal)
    correlation_id = models.TextField(null=True)  # noqa: DJ001
    sequenced_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "entries"
        indexes = [
            models.Index(fields=["at"], name="ledger_entry_at"),
            # Records are nearly every entry: the page finds them newest first on the
            # primary key, and only the rare kinds need an index, one records never touch.
            models.Index(
                fields=["index"],
                name="ledger_entry_rare_kinds",
                condition=~models.Q(kind="record"),
            ),
            models.Index(fields=["system", "at"], name="ledger_entry_system_at"),
            models.Index(
                fields=["correlation_id"],
                name="ledger_entry_correlation",
                condition=models.Q(correlation_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.index} {self.kind}:{self.source_id}"


class Node(models.Model):
    """The hash of an aligned perfect subtree of 2^level leaves (level >= 1), leaves
    [index * 2^level, (index + 1) * 2^level): any proof reads O(log n) of them."""

    pk = models.CompositePrimaryKey("level", "index")
    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    def __str__(self) -> str:
        return f"{self.level}/{self.index}"


class Checkpoint(models.Model):
    """A signed checkpoint: the C2SP signed note exactly as published."""

    size = models.BigIntegerField(db_index=True)
    root = models.BinaryField(max_length=32)
    note = models.TextField()
    key_fingerprint = models.CharField(max_length=80)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"checkpoint {self.size} ({self.created_at:%Y-%m-%d %H:%M:%S})"


class WitnessPublication(models.Model):
    """Where a checkpoint was sent off the host, and whether that worked (mutable, unlike
    the checkpoint it describes)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        FAILED = "failed"

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="witnessed")
    target = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    error = models.TextField(blank=True)
    published_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.checkpoint_id} → {self.target}: {self.status}"


class VerificationRun(models.Model):
    """One `ledger verify`: how far it got and what, if anything, did not hold."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)
    ok = models.BooleanField(null=True)
    # Incremental runs start from the last checkpoint a run verified.
    from_size = models.BigIntegerField(default=0)
    verified_size = models.BigIntegerField(default=0)
    verified_checkpoint = models.ForeignKey(
        Checkpoint, null=True, on_delete=models.PROTECT, related_name="+"
    )
    entries = models.BigIntegerField(default=0)
    checkpoints = models.IntegerField(default=0)
    problem = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"verification {self.started_at:%Y-%m-%d %H:%M} {'ok' if self.ok else self.problem}"


class ExportJob(models.Model):
    """One export bundle asked for on /ledger/ or with `ledger export`: what it covers, who
    asked, how far the worker got, and where the zip lies (under TIDELINE_EXPORT_DIR)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    requested_by = models.ForeignKey(
        "auth.User", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150)
    # The filters as asked: since/until chose the range; system and correlation ID only
    # what the summary highlights.
    since = models.DateTimeField(null=True)
    until = models.DateTimeField(null=True)
    system = models.TextField(blank=True)
    correlation_id = models.TextField(blank=True)
    prior_checkpoint = models.TextField(blank=True)
    # The range fixed when asked: entries [begin, end) against the checkpoint of tree `size`.
    begin = models.BigIntegerField()
    end = models.BigIntegerField()
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT, related_name="+")
    written = models.BigIntegerField(default=0)
    file = models.TextField(blank=True)  # relative to TIDELINE_EXPORT_DIR
    bytes = models.BigIntegerField(null=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"export {self.pk} [{self.begin}, {self.end}) {self.state}"

    @property
    def entries(self) -> int:
        return self.end - self.begin

    @property
    def percent(self) -> int:
        if self.state == self.State.DONE:
            return 100
        return min(99, self.written * 100 // self.entries) if self.entries else 0

    @property
    def live(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)
