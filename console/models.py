"""The console's own records: who may call the API or send data, and what people did."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


class JournalEntry(models.Model):
    """One action by a person or by Tideline itself. Append-only: a trigger refuses changes."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # The actor is kept by name and id, without a foreign key: deleting a user must never
    # need to change (or be blocked by) the journal.
    actor = models.CharField(max_length=150, blank=True)
    actor_id = models.BigIntegerField(null=True)
    action = models.CharField(max_length=64)
    subject = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict)
    request_id = models.CharField(max_length=64, blank=True)
    remote_addr = models.GenericIPAddressField(null=True)

    class Meta:
        verbose_name_plural = "journal entries"
        indexes = [
            models.Index(fields=["action", "subject", "at"], name="journal_action_subject_at"),
            models.Index(fields=["action", "remote_addr", "at"], name="journal_action_addr_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor or '-'} {self.action} {self.subject}"


class TokenQuerySet(models.QuerySet):
    def live(self) -> TokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class Token(models.Model):
    """A secret shown once; kept only as its SHA-256 digest and a short prefix to recognise it."""

    prefix = models.CharField(max_length=16)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_default=Now())
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None


class ApiToken(Token):
    """A person's token for /api/v1/, sent as `Authorization: Token ...`."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class IngestToken(Token):
    """A sender's token for the ingest endpoints, sent as `Authorization: Bearer ...`.

    A sender (the integration runtime, an adapter) may hold several live tokens so that it
    can rotate them; `systems`, when set, limits which systems its rows may name.
    """

    sender = models.CharField(max_length=100, db_index=True)
    systems = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.sender} ({self.prefix}…)"

    def allows_system(self, system: str) -> bool:
        return not self.systems or system in self.systems
