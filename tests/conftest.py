from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.backends.postgresql.operations import DatabaseOperations
from django.test import Client

from console.access import Role
from console.services import user_create
from tests.receivers import Receiver, receiver_serving

PASSWORD = "correct horse battery staple"
NAMES = {Role.SUPPORT: "alice", Role.OPERATOR: "bob", Role.AUDITOR: "charlie", Role.ADMIN: "dana"}


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    # The suite serves static files from the apps (no collectstatic); `serve` tests the manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    # Real password checks, but with a fast hash: the suite signs in hundreds of times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


_flush = DatabaseOperations.execute_sql_flush


def _flush_past_append_only_triggers(self: DatabaseOperations, sql_list: list[str]) -> None:
    # Transactional tests empty every table between tests; the append-only triggers would
    # refuse. Only a superuser may switch triggers off this way, which the application never is.
    with self.connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        _flush(self, sql_list)
    finally:
        with self.connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


DatabaseOperations.execute_sql_flush = _flush_past_append_only_triggers  # type: ignore[assignment]


@pytest.fixture
def make_user(db: Any) -> Callable[..., User]:
    def make(role: Role, username: str | None = None) -> User:
        return user_create(
            username=username or NAMES[role], role=role, password=PASSWORD, actor="test"
        )

    return make


@pytest.fixture
def client_as(make_user: Callable[..., User]) -> Callable[[Role | None], Client]:
    """A test client signed in with the given role (None: anonymous)."""

    def signed_in(role: Role | None) -> Client:
        client = Client()
        if role is not None:
            client.force_login(make_user(role))
        return client

    return signed_in


def require_service(available: bool, missing: str) -> None:
    """Skip with one line naming what is missing; in CI (which provides everything) fail instead."""
    if available:
        return
    if os.environ.get("TIDELINE_REQUIRE_ALL_SERVICES"):
        pytest.fail(f"CI must provide this: {missing}")
    pytest.skip(missing)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver (tests/receivers.py); the replay and alerts suites each put it on
    their own allow-list."""
    with receiver_serving() as target:
        yield target
