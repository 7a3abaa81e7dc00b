"""Personal API tokens and ingest tokens: shown once, stored hashed, revocable, kept apart."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, RequestFactory

from console.access import Role
from console.authentication import IngestAuthError, ingest_token_from
from console.models import ApiToken, IngestToken, JournalEntry
from console.services import api_token_create, ingest_token_create, ingest_token_revoke

pytestmark = pytest.mark.django_db


def test_a_personal_token_is_shown_once_and_works_until_revoked(client_as, make_user) -> None:
    browser = client_as(Role.OPERATOR)
    created = browser.post("/account/api-tokens/", {"name": "nightly report"}, follow=True)
    secret = created.context["issued"]["secret"]
    assert secret.encode() in created.content
    assert created.redirect_chain == [("/account/api-tokens/", 302)]  # a reload does not resubmit
    assert secret.encode() not in browser.get("/account/api-tokens/").content  # never again

    api = Client(HTTP_AUTHORIZATION=f"Token {secret}")
    me = api.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json() == {
        "username": "bob",
        "roles": ["operator"],
        "capabilities": ["operate", "view", "view_unmasked"],
        "token": "nightly report",
    }
    token = ApiToken.objects.get()
    assert token.last_used_at is not None

    browser.post(f"/account/api-tokens/{token.pk}/revoke")
    refused = api.get("/api/v1/me")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Unknown or revoked token."}


def test_tokens_are_stored_only_as_digests(make_user) -> None:
    personal = api_token_create(user=make_user(Role.SUPPORT), name="cli")
    ingest = ingest_token_create(sender="runtime-prod", systems=["ERP"], actor="test")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM console_apitoken")
        api_rows = repr(cursor.fetchall())
        cursor.execute("SELECT * FROM console_ingesttoken")
        ingest_rows = repr(cursor.fetchall())
        cursor.execute("SELECT details::text FROM console_journalentry")
        journal = repr(cursor.fetchall())
    for secret, rows in ((personal.secret, api_rows), (ingest.secret, ingest_rows)):
        assert secret not in rows and secret not in journal
        assert hashlib.sha256(secret.encode()).hexdigest() in rows


def test_someone_elses_token_cannot_be_revoked(client_as, make_user) -> None:
    token = api_token_create(user=make_user(Role.SUPPORT), name="alice's").token
    response = client_as(Role.OPERATOR).post(f"/account/api-tokens/{token.pk}/revoke")
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.is_live


def test_an_admin_creates_an_ingest_token_limited_to_systems(client_as) -> None:
    response = client_as(Role.ADMIN).post(
        "/settings/ingest-tokens/", {"sender": "runtime-prod", "systems": "ERP, WMS"}, follow=True
    )
    assert response.status_code == 200
    secret = response.context["issued"]["secret"]
    request = RequestFactory().post("/v1/traces", HTTP_AUTHORIZATION=f"Bearer {secret}")
    token = ingest_token_from(request)
    assert token.sender == "runtime-prod"
    assert token.allows_system("WMS") and not token.allows_system("FIN")
    assert JournalEntry.objects.filter(action="ingest_token.create", actor="dana").count() == 1


def test_a_bad_systems_list_is_refused_and_nothing_is_saved(client_as) -> None:
    response = client_as(Role.ADMIN).post(
        "/settings/ingest-tokens/", {"sender": "runtime", "systems": "ERP,<script>"}
    )
    assert response.status_code == 400
    assert b"is not a system name" in response.content
    assert b"<script>" not in response.content
    assert not IngestToken.objects.exists()


def test_a_sender_rotates_with_two_live_tokens() -> None:
    old = ingest_token_create(sender="runtime-prod", systems=[], actor="test")
    new = ingest_token_create(sender="runtime-prod", systems=[], actor="test")
    for issued in (old, new):
        assert ingest_token_from(
            RequestFactory().post("/", HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        ).pk
    ingest_token_revoke(token=old.token, actor="test")  # type: ignore[arg-type]
    with pytest.raises(IngestAuthError, match="Unknown or revoked ingest token"):
        ingest_token_from(RequestFactory().post("/", HTTP_AUTHORIZATION=f"Bearer {old.secret}"))
    assert ingest_token_from(
        RequestFactory().post("/", HTTP_AUTHORIZATION=f"Bearer {new.secret}")
    ).pk


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing 'Authorization: Bearer <ingest token>'."),
        ("Basic dXNlcjpwYXNz", "Ingest takes 'Authorization: Bearer <ingest token>'."),
        ("Bearer tli_not-a-real-token", "Unknown or revoked ingest token."),
    ],
)
def test_ingest_refuses_missing_or_unknown_tokens(header: str | None, message: str) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(IngestAuthError) as refused:
        ingest_token_from(RequestFactory().post("/v1/traces", headers=headers))
    assert str(refused.value) == message


def test_tokens_of_the_wrong_kind_are_refused_with_a_reason(make_user) -> None:
    personal = api_token_create(user=make_user(Role.ADMIN), name="cli").secret
    ingest = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret

    with pytest.raises(IngestAuthError, match="personal API token"):
        ingest_token_from(
            RequestFactory().post("/v1/traces", HTTP_AUTHORIZATION=f"Bearer {personal}")
        )

    on_api = Client(HTTP_AUTHORIZATION=f"Bearer {ingest}").get("/api/v1/me")
    assert on_api.status_code == 401
    assert "ingest token" in on_api.json()["detail"]

    on_page = Client(HTTP_AUTHORIZATION=f"Bearer {ingest}").get("/")
    assert on_page.status_code == 302 and on_page["Location"].startswith("/login/")


def test_a_new_secret_is_never_stored_on_the_server(client_as) -> None:
    browser = client_as(Role.SUPPORT)
    browser.post("/account/api-tokens/", {"name": "laptop"})  # the redirect is never followed
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_data FROM django_session")
        sessions = [browser.session.decode(row[0]) for row in cursor.fetchall()]
    secret = browser.get("/account/api-tokens/").context["issued"]["secret"]
    assert secret.startswith("tlp_")
    assert all(secret not in repr(session) for session in sessions)


@pytest.mark.django_db(transaction=True)
def test_a_token_request_after_the_database_dropped_the_connection_still_answers(
    live_server: Any, make_user: Callable[..., User]
) -> None:
    """The server keeps its database connection between requests; when PostgreSQL has closed
    it (a restart, a failover), the next request opens a new one instead of failing."""
    secret = api_token_create(user=make_user(Role.SUPPORT), name="script").secret
    with httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {secret}"}, timeout=30
    ) as http:
        assert http.get("/api/v1/flows").status_code == 200
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1, "the server's connection was kept"
        answer = http.get("/api/v1/flows")
        assert answer.status_code == 200, answer.text
