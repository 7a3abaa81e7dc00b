"""Operations that change the console's state, one function per use case."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from console.access import Role
from console.models import ApiToken, IngestToken, JournalEntry

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpRequest

    Actor = User | AnonymousUser | str | None

API_TOKEN_KIND = "tlp_"  # noqa: S105 - a kind marker ("Tideline personal"), not a secret
INGEST_TOKEN_KIND = "tli_"  # noqa: S105 - "Tideline ingest"
SYSTEM_ACTOR = "tideline"


def token_digest(raw: str) -> str:
    # Tokens are 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def system_names(listed: str) -> list[str]:
    """'ERP, WMS' → ['ERP', 'WMS']; ValueError naming the first entry that is not a system name."""
    systems = [item.strip() for item in listed.split(",") if item.strip()]
    for system in systems:
        if len(system) > 50 or not system.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{system!r} is not a system name (letters, digits, - and _).")
    return systems


def _new_secret(kind: str) -> str:
    return kind + secrets.token_urlsafe(32)


def journal_append(
    *,
    actor: Actor,
    action: str,
    subject: str = "",
    details: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> JournalEntry:
    """Record one action. Every state change by a person passes through here."""
    actor_name, actor_id = _actor_identity(actor)
    return JournalEntry.objects.create(
        actor=actor_name,
        actor_id=actor_id,
        action=action,
        subject=subject,
        details=details or {},
        request_id=getattr(request, "request_id", "") if request else "",
        remote_addr=request.META.get("REMOTE_ADDR") or None if request else None,
    )


def journal_append_many(
    *, actor: Actor, action: str, entries: Iterable[tuple[str, dict[str, Any]]]
) -> list[JournalEntry]:
    """Record one action on many subjects, as (subject, details) pairs, in one INSERT: a
    worker's group of replays is journaled without a round trip per message."""
    actor_name, actor_id = _actor_identity(actor)
    return JournalEntry.objects.bulk_create(
        JournalEntry(
            actor=actor_name, actor_id=actor_id, action=action, subject=subject, details=details
        )
        for subject, details in entries
    )


def _actor_identity(actor: Actor) -> tuple[str, int | None]:
    if actor is None:
        return SYSTEM_ACTOR, None
    if isinstance(actor, str):
        return actor, None
    if not actor.is_authenticated:
        return "", None
    return actor.get_username(), actor.pk


@dataclass(frozen=True)
class IssuedToken:
    """A newly made token: `secret` exists only here, to be shown once."""

    token: ApiToken | IngestToken
    secret: str


def api_token_create(*, user: User, name: str, request: HttpRequest | None = None) -> IssuedToken:
    secret = _new_secret(API_TOKEN_KIND)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=secret[:12], digest=token_digest(secret)
        )
        journal_append(
            actor=user,
            action="api_token.create",
            subject=f"api_token:{token.pk}",
            details={"name": name, "prefix": token.prefix},
            request=request,
        )
    return IssuedToken(token=token, secret=secret)


def api_token_revoke(*, token: ApiToken, actor: Actor, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            journal_append(
                actor=actor,
                action="api_token.revoke",
                subject=f"api_token:{token.pk}",
                details={"owner": token.user.get_username(), "prefix": token.prefix},
                request=request,
            )


def ingest_token_create(
    *, sender: str, systems: list[str], actor: Actor, request: HttpRequest | None = None
) -> IssuedToken:
    secret = _new_secret(INGEST_TOKEN_KIND)
    created_by = actor if isinstance(actor, User) else None
    with transaction.atomic():
        token = IngestToken.objects.create(
            sender=sender,
            systems=sorted(set(systems)),
            prefix=secret[:12],
            digest=token_digest(secret),
            created_by=created_by,
        )
        journal_append(
            actor=actor,
            action="ingest_token.create",
            subject=f"ingest_token:{token.pk}",
            details={"sender": sender, "systems": token.systems, "prefix": token.prefix},
            request=request,
        )
    return IssuedToken(token=token, secret=secret)


def ingest_token_revoke(
    *, token: IngestToken, actor: Actor, request: HttpRequest | None = None
) -> None:
    with transaction.atomic():
        revoked = IngestToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            journal_append(
                actor=actor,
                action="ingest_token.revoke",
                subject=f"ingest_token:{token.pk}",
                details={"sender": token.sender, "prefix": token.prefix},
                request=request,
            )


def token_mark_used(token: ApiToken | IngestToken, *, now: datetime) -> None:
    """Keep last-used current to the minute without a write on every request."""
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= 60:
        type(token).objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def user_create(*, username: str, role: Role, password: str, actor: Actor = None) -> User:
    user_model = get_user_model()
    with transaction.atomic():
        user = user_model.objects.create_user(
            username=username, password=password, is_staff=role is Role.ADMIN
        )
        group, _ = Group.objects.get_or_create(name=role.value)
        user.groups.add(group)
        journal_append(
            actor=actor,
            action="user.create",
            subject=f"user:{username}",
            details={"roles": [role.value]},
        )
    return user
