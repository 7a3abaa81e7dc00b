"""Reads of the console's state that are more than a queryset."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.postgres.aggregates import ArrayAgg
from django.contrib.postgres.fields import ArrayField
from django.db.models import CharField, Q, Value

from console.models import ApiToken, IngestToken, JournalEntry
from console.services import token_digest

LOGIN_FAILED = "login.failed"
LOGIN_THROTTLED = "login.throttled"


def api_token_find(secret: str) -> ApiToken | None:
    """The live token with its user, and the names of the user's groups as `group_names`:
    one query for what every API request needs."""
    return (
        ApiToken.objects.live()
        .select_related("user")
        .annotate(
            group_names=ArrayAgg(
                "user__groups__name",
                filter=Q(user__groups__isnull=False),
                default=Value([], output_field=ArrayField(CharField())),
            )
        )
        .filter(digest=token_digest(secret))
        .first()
    )


def ingest_token_find(secret: str) -> IngestToken | None:
    return IngestToken.objects.live().filter(digest=token_digest(secret)).first()


def login_is_throttled(*, username: str, remote_addr: str | None, now: datetime) -> bool:
    """Too many failed logins lately for this account, or from this address."""
    since = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    limit = settings.LOGIN_FAILURE_LIMIT
    recent = JournalEntry.objects.filter(action=LOGIN_FAILED, at__gte=since)
    if recent.filter(subject=f"user:{username.lower()}").count() >= limit:
        return True
    # An address may serve a whole office behind NAT, so it gets more room than one account.
    by_address = Q(remote_addr=remote_addr) if remote_addr else Q(pk__in=[])
    return recent.filter(by_address).count() >= limit * 4


def refusal_journaled(*, username: str, now: datetime) -> bool:
    """Whether this account's throttling is already in the journal for the current window."""
    since = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    return JournalEntry.objects.filter(
        action=LOGIN_THROTTLED, subject=f"user:{username.lower()}", at__gte=since
    ).exists()
