"""Who may do what: the four roles of DESIGN.md and the one rule table every URL answers to.

Every page and endpoint is named in URL_RULES (or its namespace in NAMESPACE_RULES). The
AccessMiddleware enforces the table for pages, MatrixPermission for DRF views; a URL that
is in neither table is refused, and tests/console/test_access.py fails for it.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from rest_framework.permissions import BasePermission

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest
    from django.urls import ResolverMatch


class Role(StrEnum):
    SUPPORT = "support"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Capability(StrEnum):
    VIEW = "view"  # dashboard, flows, records, dead letters, search; payloads masked
    VIEW_UNMASKED = "view_unmasked"  # payloads as they were sent
    OPERATE = "operate"  # replay, repair, approve others' replays, resolve, discard
    AUDIT = "audit"  # the ledger and its exports
    ADMINISTER = "administer"  # users and roles, ingest tokens, flow definitions, rules


ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.SUPPORT: frozenset({Capability.VIEW}),
    Role.OPERATOR: frozenset({Capability.VIEW, Capability.VIEW_UNMASKED, Capability.OPERATE}),
    Role.AUDITOR: frozenset({Capability.VIEW, Capability.VIEW_UNMASKED, Capability.AUDIT}),
    Role.ADMIN: frozenset(Capability),
}


class Open(StrEnum):
    """Rules that are not a capability."""

    PUBLIC = "public"  # anyone, signed in or not (login page, liveness)
    SIGNED_IN = "signed_in"  # any person with a role (their own tokens, the API docs)
    INGEST = "ingest"  # no person: the view itself demands an ingest token
    METRICS = "metrics"  # the metrics bearer token, or loopback when none is set


Rule = Capability | Open

URL_RULES: dict[str, Rule] = {
    "login": Open.PUBLIC,
    "logout": Open.PUBLIC,
    "healthz": Open.PUBLIC,
    "readyz": Open.PUBLIC,
    "metrics": Open.METRICS,
    "dashboard": Capability.VIEW,
    "search": Capability.VIEW,
    "api-tokens": Open.SIGNED_IN,
    "api-token-revoke": Open.SIGNED_IN,
    "ingest-tokens": Capability.ADMINISTER,
    "ingest-token-revoke": Capability.ADMINISTER,
    "api-schema": Open.SIGNED_IN,
    "api-docs": Open.SIGNED_IN,
    "api-me": Open.SIGNED_IN,
    "otlp-traces": Open.INGEST,
    "ingest-records": Open.INGEST,
    "ingest-dead-letters": Open.INGEST,
    "api-flow-definitions": Capability.VIEW,
    "flow": Capability.VIEW,
    "api-flows": Capability.VIEW,
    "api-flow": Capability.VIEW,
    "api-search": Capability.VIEW,
    "api-dead-letters": Capability.VIEW,
    "api-dead-letter": Capability.VIEW,
    "api-dead-letter-replay": Capability.OPERATE,
    "api-dead-letter-resolve": Capability.OPERATE,
    "api-dead-letter-discard": Capability.OPERATE,
    "api-replay": Capability.VIEW,
    "api-replay-approve": Capability.OPERATE,
    "api-replay-reject": Capability.OPERATE,
    "api-replay-confirm-delivered": Capability.OPERATE,
    "api-bulk-replays": Capability.OPERATE,
    "api-bulk-replay": Capability.OPERATE,
    "api-bulk-replay-pause": Capability.OPERATE,
    "api-bulk-replay-resume": Capability.OPERATE,
    "api-bulk-replay-cancel": Capability.OPERATE,
    "api-bulk-replay-approve": Capability.OPERATE,
    "api-bulk-replay-reject": Capability.OPERATE,
    "dead-letters": Capability.VIEW,
    "dead-letter": Capability.VIEW,
    "dead-letter-replay": Capability.OPERATE,
    "dead-letter-close": Capability.OPERATE,
    "replay-decide": Capability.OPERATE,
    "replay-confirm": Capability.OPERATE,
    # Anyone who reads dead letters may watch a bulk replay; only operators start or steer one.
    "bulk-replays": Capability.VIEW,
    "bulk-replay": Capability.VIEW,
    "bulk-replay-new": Capability.OPERATE,
    "bulk-replay-pause": Capability.OPERATE,
    "bulk-replay-resume": Capability.OPERATE,
    "bulk-replay-cancel": Capability.OPERATE,
    "bulk-replay-approve": Capability.OPERATE,
    "bulk-replay-reject": Capability.OPERATE,
    "flow-definitions": Capability.ADMINISTER,
    "flow-definitions-download": Capability.ADMINISTER,
    "alerts": Capability.VIEW,
    "alert-incident": Capability.VIEW,
    "alert-incident-decide": Capability.OPERATE,
    "alert-incident-replay": Capability.OPERATE,
    "alert-rules": Capability.VIEW,
    "alert-rule-new": Capability.ADMINISTER,
    "alert-rule-edit": Capability.ADMINISTER,
    "alert-channels": Capability.ADMINISTER,
    "alert-silences": Capability.VIEW,
    "alert-silence-post": Capability.OPERATE,
    "alert-history": Capability.VIEW,
    "api-ledger-checkpoint": Capability.AUDIT,
    "api-ledger-inclusion": Capability.AUDIT,
    "api-ledger-consistency": Capability.AUDIT,
    "api-ledger-public-key": Capability.AUDIT,
    "ledger": Capability.AUDIT,
    "ledger-export-new": Capability.AUDIT,
    "ledger-export-download": Capability.AUDIT,
}
NAMESPACE_RULES: dict[str, Rule] = {"admin": Capability.ADMINISTER}


def rule_for(match: ResolverMatch) -> Rule | None:
    if match.view_name in URL_RULES:
        return URL_RULES[match.view_name]
    for namespace in match.namespaces:
        if namespace in NAMESPACE_RULES:
            return NAMESPACE_RULES[namespace]
    return None


def roles_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[Role]:
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    cached = getattr(user, "_tideline_roles", None)
    if cached is None:
        cached = roles_remember(user, user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
    return cached


def roles_remember(user: AbstractBaseUser, group_names: Iterable[str]) -> frozenset[Role]:
    """The user's roles from the names of their groups, kept on the user for this request
    (a personal token's lookup reads the names in its own query: one round trip less)."""
    names = set(group_names)
    roles = frozenset(role for role in Role if role.value in names)
    if user.is_superuser:  # type: ignore[attr-defined]
        roles |= {Role.ADMIN}
    user._tideline_roles = roles  # type: ignore[attr-defined]
    return roles


def capabilities_of(user: AbstractBaseUser | AnonymousUser) -> frozenset[Capability]:
    return frozenset().union(*(ROLE_CAPABILITIES[role] for role in roles_of(user)))


def user_may(user: AbstractBaseUser | AnonymousUser, rule: Rule) -> bool:
    """Whether a person may use a URL with this rule (METRICS and INGEST are not for people)."""
    if rule is Open.PUBLIC or rule is Open.INGEST:
        return True
    if rule is Open.SIGNED_IN:
        return bool(roles_of(user))
    if isinstance(rule, Capability):
        return rule in capabilities_of(user)
    return False


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        return secrets.compare_digest(sent.encode(), f"Bearer {token}".encode())
    if settings.TIDELINE_HTTPS:
        # Behind a TLS proxy every request comes from loopback: loopback proves nothing there.
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


class MatrixPermission(BasePermission):
    """DRF's side of the rule table: the same rules, after DRF has authenticated the token."""

    message = "Your role does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        match = request.resolver_match
        rule = rule_for(match) if match else None
        if rule is None:
            return False
        if rule is Open.METRICS:
            return metrics_allowed(request)
        return user_may(request.user, rule)


NAVIGATION: list[tuple[str, str]] = [
    ("Dashboard", "dashboard"),
    ("Dead letters", "dead-letters"),
    ("Bulk replays", "bulk-replays"),
    ("Alerts", "alerts"),
    ("Ledger", "ledger"),
    ("Flow definitions", "flow-definitions"),
    ("Ingest tokens", "ingest-tokens"),
    ("Users & roles", "admin:auth_user_changelist"),
    ("API tokens", "api-tokens"),
    ("API docs", "api-docs"),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Template context: the header's links, only those the user's role may follow."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"navigation": [], "user_roles": [], "user_capabilities": []}
    links = []
    for label, view_name in NAVIGATION:
        try:
            url = reverse(view_name)
        except NoReverseMatch:
            continue
        rule = URL_RULES.get(view_name) or NAMESPACE_RULES.get(view_name.split(":")[0])
        if rule is not None and user_may(user, rule):
            links.append({"label": label, "url": url, "current": request.path == url})
    return {
        "navigation": links,
        "user_roles": sorted(roles_of(user)),
        "user_capabilities": sorted(capabilities_of(user)),
    }


class RoleBackend:
    """Django's permission checks (the admin's) answered from the same matrix: admins may."""

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        return None

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return Capability.ADMINISTER in capabilities_of(user_obj)

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return Capability.ADMINISTER in capabilities_of(user_obj)
