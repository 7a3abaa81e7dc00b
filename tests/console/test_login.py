"""Signing in and out: wrong passwords, throttling, and the pages around it."""

from __future__ import annotations

import pytest
import time_machine
from django.test import Client

from console.access import Role
from console.models import JournalEntry
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_wrong_password_is_refused_and_journaled(client: Client, make_user) -> None:
    make_user(Role.SUPPORT)
    response = client.post("/login/", {"username": "alice", "password": "not it"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert JournalEntry.objects.filter(action="login.failed", subject="user:alice").count() == 1
    assert client.get("/").status_code == 302


def test_sign_in_lands_on_the_page_asked_for_and_sign_out_ends_it(
    client: Client, make_user
) -> None:
    make_user(Role.SUPPORT)
    response = client.post(
        "/login/?next=/search/%3Fq%3D4711",
        {"username": "alice", "password": PASSWORD, "next": "/search/?q=4711"},
    )
    assert response.status_code == 302 and response["Location"] == "/search/?q=4711"
    client.post("/logout/")
    assert client.get("/").status_code == 302
    assert list(JournalEntry.objects.values_list("action", flat=True).order_by("id"))[-2:] == [
        "login",
        "logout",
    ]


def test_repeated_failures_lock_the_account_for_a_while(client: Client, make_user) -> None:
    make_user(Role.SUPPORT)
    with time_machine.travel("2026-11-20 09:00Z", tick=False):
        for _ in range(5):
            client.post("/login/", {"username": "alice", "password": "guess"})
        refused = client.post("/login/", {"username": "alice", "password": PASSWORD})
        assert refused.status_code == 429
        assert b"Too many failed sign-ins" in refused.content
        assert client.get("/").status_code == 302
    with time_machine.travel("2026-11-20 09:16Z", tick=False):
        assert (
            client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
        )


def test_the_login_page_escapes_what_it_echoes(client: Client) -> None:
    response = client.post("/login/", {"username": "<script>alert(1)</script>", "password": "x"})
    assert b"<script>alert(1)</script>" not in response.content


def test_search_echoes_the_query_escaped(client_as) -> None:
    response = client_as(Role.SUPPORT).get("/search/", {"q": "<img src=x onerror=alert(1)>"})
    assert response.status_code == 200
    assert b"&lt;img src=x onerror=alert(1)&gt;" in response.content
    assert b"<img src=x" not in response.content


def test_the_console_has_csrf_protection(make_user) -> None:
    make_user(Role.SUPPORT)
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 403


def test_refused_attempts_are_journaled_once_per_window(client: Client, make_user) -> None:
    make_user(Role.SUPPORT)
    with time_machine.travel("2026-11-20 09:00Z", tick=False):
        for _ in range(5):
            client.post("/login/", {"username": "alice", "password": "guess"})
        for _ in range(10):
            assert (
                client.post("/login/", {"username": "alice", "password": "guess"}).status_code
                == 429
            )
    assert JournalEntry.objects.filter(action="login.throttled").count() == 1
