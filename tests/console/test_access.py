"""The permission matrix, enforced for every URL in the URL conf and every role."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from console.access import NAMESPACE_RULES, URL_RULES, Capability, Open, Role

SAMPLE_VALUES = {
    "app_label": "auth",
    "url": "anything",
    "content_type_id": "1",
    "replay_id": "00000000-0000-4000-8000-000000000001",
    "bulk_id": "00000000-0000-4000-8000-000000000002",
}


@dataclass(frozen=True)
class Route:
    view_name: str
    namespaces: tuple[str, ...]
    path: str

    def __str__(self) -> str:
        return f"{self.view_name or '(unnamed)'} {self.path}"


def _sample_path(prefix: str, pattern: URLPattern | URLResolver) -> str:
    regex = pattern.pattern.regex.pattern.lstrip("^").rstrip("$").replace("\\Z", "")
    regex = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: SAMPLE_VALUES.get(m.group(1), "1"), regex)
    return prefix + regex.replace("\\", "")


def all_routes(
    patterns: list | None = None, prefix: str = "/", namespaces: tuple[str, ...] = ()
) -> Iterator[Route]:
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            inner = (*namespaces, pattern.namespace) if pattern.namespace else namespaces
            yield from all_routes(pattern.url_patterns, _sample_path(prefix, pattern), inner)
        else:
            name = ":".join((*namespaces, pattern.name)) if pattern.name else ""
            yield Route(name, namespaces, _sample_path(prefix, pattern))


ROUTES = list(all_routes())
ROLES: list[Role | None] = [None, *Role]


def rule_of(route: Route) -> Capability | Open | None:
    if route.view_name in URL_RULES:
        return URL_RULES[route.view_name]
    return next((NAMESPACE_RULES[ns] for ns in route.namespaces if ns in NAMESPACE_RULES), None)


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_url_has_a_rule(route: Route) -> None:
    assert rule_of(route) is not None, f"{route} has no entry in console.access.URL_RULES"


def _expect_allowed(role: Role | None, rule: Capability | Open) -> bool:
    from console.access import ROLE_CAPABILITIES

    if rule in (Open.PUBLIC, Open.INGEST):
        return True
    if role is None:
        return False
    if rule is Open.SIGNED_IN:
        return True
    return rule in ROLE_CAPABILITIES[role]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize(
    "route", [r for r in ROUTES if rule_of(r) not in (None, Open.METRICS)], ids=str
)
def test_each_role_gets_what_the_matrix_says(
    route: Route, role: Role | None, client_as: Callable[[Role | None], Client]
) -> None:
    rule = rule_of(route)
    assert rule is not None
    response = client_as(role).get(route.path)
    login_redirect = response.status_code == 302 and response["Location"].startswith("/login/")
    # A view may refuse a bare GET for its own reasons (the admin's autocomplete does);
    # what counts here is a refusal by the role rules, which says so.
    by_rule = response.status_code == 403 and b"Your role does not allow this" in response.content
    refused = response.status_code == 401 or login_redirect or by_rule
    if _expect_allowed(role, rule):
        assert not refused, f"{role} was refused {route}: {response.status_code}"
    elif role is None:
        api = route.path.startswith("/api/")
        assert (response.status_code == 401) if api else login_redirect, (
            route,
            response.status_code,
        )
    else:
        assert by_rule, (role, route, response.status_code)


# The same, spelled out for the pages people ask about, independent of the rule table.
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        (None, "/", 302),
        (None, "/api/v1/me", 401),
        (None, "/api/docs/", 401),
        (Role.SUPPORT, "/", 200),
        (Role.SUPPORT, "/admin/", 403),
        (Role.SUPPORT, "/settings/ingest-tokens/", 403),
        (Role.OPERATOR, "/admin/", 403),
        (Role.AUDITOR, "/settings/ingest-tokens/", 403),
        (Role.ADMIN, "/admin/", 200),
        (Role.ADMIN, "/admin/auth/user/", 200),
        (Role.ADMIN, "/settings/ingest-tokens/", 200),
        (Role.AUDITOR, "/api/docs/", 200),
        (Role.SUPPORT, "/api/schema/", 200),
    ],
)
def test_known_pages(
    role: Role | None, path: str, status: int, client_as: Callable[[Role | None], Client]
) -> None:
    assert client_as(role).get(path).status_code == status


@pytest.mark.django_db
def test_a_refused_page_says_why_without_a_stack_trace(
    client_as: Callable[[Role | None], Client],
) -> None:
    response = client_as(Role.SUPPORT).get("/settings/ingest-tokens/")
    assert response.status_code == 403
    assert b"Your role does not allow this page." in response.content
    assert b"Traceback" not in response.content


@pytest.mark.django_db
def test_navigation_shows_only_what_the_role_may_open(
    client_as: Callable[[Role | None], Client],
) -> None:
    support_page = client_as(Role.SUPPORT).get("/").content.decode()
    admin_page = client_as(Role.ADMIN).get("/").content.decode()
    assert "Ingest tokens" not in support_page and "Users &amp; roles" not in support_page
    assert "Ingest tokens" in admin_page and "Users &amp; roles" in admin_page


@pytest.mark.django_db
def test_a_role_is_given_in_the_admin(
    client_as: Callable[[Role | None], Client], make_user
) -> None:
    from django.contrib.auth.models import Group

    erin = make_user(Role.SUPPORT, username="erin")
    admin = client_as(Role.ADMIN)
    page = admin.get(f"/admin/auth/user/{erin.pk}/change/")
    assert page.status_code == 200
    operator = Group.objects.get(name="operator")
    form = page.context["adminform"].form
    data = {
        key: value for key, value in form.initial.items() if value is not None and key != "password"
    }
    data.update(
        {
            "groups": [operator.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "last_login_0": "",
            "last_login_1": "",
            "user_permissions": [],
        }
    )
    response = admin.post(f"/admin/auth/user/{erin.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    erin.refresh_from_db()
    assert list(erin.groups.values_list("name", flat=True)) == ["operator"]
    from console.models import JournalEntry

    entry = JournalEntry.objects.get(action="user.change", subject="user:erin")
    assert entry.actor == "dana" and entry.details["roles"] == ["operator"]


@pytest.mark.django_db
def test_bulk_deleting_users_and_changing_a_password_are_journaled(client_as, make_user) -> None:
    from console.models import JournalEntry

    erin = make_user(Role.SUPPORT, username="erin")
    frank = make_user(Role.SUPPORT, username="frank")
    admin = client_as(Role.ADMIN)
    changed = admin.post(
        f"/admin/auth/user/{erin.pk}/password/",
        {
            "password1": "a brand new passphrase",
            "password2": "a brand new passphrase",
            "usable_password": "true",
        },
    )
    assert changed.status_code == 302
    deleted = admin.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [erin.pk, frank.pk], "post": "yes"},
    )
    assert deleted.status_code == 302
    journal = set(JournalEntry.objects.filter(actor="dana").values_list("action", "subject"))
    assert {
        ("user.password_change", "user:erin"),
        ("user.delete", "user:erin"),
        ("user.delete", "user:frank"),
    } <= journal
