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
            models.Index(fields=["kind", "at"], name="ledger_entry_kind_at"),
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
