"""Replay tests: a real HTTP receiver standing in for the target (the shared one of
tests/receivers.py), and a real Celery worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from console.access import Role
from console.services import api_token_create, ingest_token_create
from tests.processes import celery_worker, worker_stop
from tests.receivers import Receiver

REPLAY_TIMEOUT_SECONDS = 2
SLOW_SECONDS = 0.25  # well inside the timeout: a group of sends takes long enough to kill


@pytest.fixture
def receiver(receiver: Receiver) -> Receiver:
    """The shared target (tests/receivers.py), slow and hanging on the replay timeout's scale."""
    receiver.slow_seconds = SLOW_SECONDS
    receiver.hang_seconds = REPLAY_TIMEOUT_SECONDS * 3
    return receiver


@pytest.fixture
def worker(
    transactional_db: Any, tmp_path: Path, receiver: Receiver
) -> Iterator[Callable[[], Any]]:
    """Start (or restart) a real Celery worker with beat; all stopped at the end."""
    started: list[Any] = []

    def start() -> Any:
        process = celery_worker(
            str(tmp_path / "beat-schedule"), concurrency=2,
            env={
                "TIDELINE_REPLAY_TIMEOUT_SECONDS": str(REPLAY_TIMEOUT_SECONDS),
                "TIDELINE_REPLAY_ALLOWED_DESTINATIONS": receiver.origin,
            },
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        worker_stop(process)


@pytest.fixture(autouse=True)
def allowed(settings: Any, receiver: Receiver) -> None:
    settings.TIDELINE_REPLAY_ALLOWED_DESTINATIONS = [receiver.origin]


@pytest.fixture
def sender(live_server: Any, transactional_db: Any) -> httpx.Client:
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture
def operators(live_server: Any, make_user: Callable[..., User]) -> list[httpx.Client]:
    """Two operators with personal tokens, talking to the console over real HTTP."""
    clients = []
    for name in ("olga", "oskar"):
        user = make_user(Role.OPERATOR, username=name)
        secret = api_token_create(user=user, name="script").secret
        clients.append(
            httpx.Client(
                base_url=live_server.url, headers={"Authorization": f"Token {secret}"}, timeout=30
            )
        )
    return clients
