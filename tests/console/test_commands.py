"""The commands that set Tideline up from a script."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from console.access import roles_of
from console.models import IngestToken, JournalEntry

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_user_create_reads_the_password_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    run("user", "create", "bob", "--role", "operator", "--password-stdin")
    client = Client()
    assert client.login(username="bob", password="a long enough passphrase")
    from django.contrib.auth.models import User

    assert roles_of(User.objects.get(username="bob")) == {"operator"}
    assert JournalEntry.objects.filter(action="user.create", subject="user:bob").exists()


def test_user_create_refuses_a_weak_password_and_a_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("1234\n"))
    with pytest.raises(CommandError, match="Password refused"):
        run("user", "create", "bob", "--role", "operator", "--password-stdin")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    run("user", "create", "bob", "--role", "operator", "--password-stdin")
    with pytest.raises(CommandError, match="exists already"):
        run("user", "create", "BOB", "--role", "support", "--password-stdin")


def test_api_token_create_prints_a_working_token_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough passphrase\n"))
    run("user", "create", "charlie", "--role", "auditor", "--password-stdin")
    token = run("api_token", "create", "--user", "charlie").strip().splitlines()[-1]
    me = Client(HTTP_AUTHORIZATION=f"Token {token}").get("/api/v1/me")
    assert me.status_code == 200 and me.json()["roles"] == ["auditor"]


def test_ingest_token_create_and_revoke() -> None:
    token = (
        run("ingest_token", "create", "--sender", "runtime-prod", "--systems", "ERP,WMS")
        .strip()
        .splitlines()[-1]
    )
    stored = IngestToken.objects.get()
    assert token.startswith(stored.prefix) and stored.systems == ["ERP", "WMS"]
    run("ingest_token", "revoke", stored.prefix)
    stored.refresh_from_db()
    assert not stored.is_live


def test_api_token_for_nobody_is_refused() -> None:
    with pytest.raises(CommandError, match="No active user named 'nobody'"):
        run("api_token", "create", "--user", "nobody")


def test_ingest_token_create_refuses_what_the_form_refuses() -> None:
    with pytest.raises(CommandError, match="'<script>' is not a system name"):
        run("ingest_token", "create", "--sender", "runtime-prod", "--systems", "ERP,<script>")
    assert not IngestToken.objects.exists()
