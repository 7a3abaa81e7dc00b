"""Replay tests: a real HTTP receiver standing in for the target, and a real Celery worker."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User

from console.access import Role
from console.services import api_token_create, ingest_token_create
from tests.processes import celery_worker

REPLAY_TIMEOUT_SECONDS = 2
SLOW_SECONDS = 0.25  # well inside the timeout: a group of sends takes long enough to kill


@dataclass
class Receiver:
    """A target that records every delivery; `behaviour` decides its answer."""

    url: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    behaviour: str = "ok"  # ok | slow (answers after SLOW_SECONDS) | unavailable | hang
    health_checks: int = 0  # GETs of its health URL (any path): 503 while unavailable
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        """The allow-list prefix that admits this receiver and nothing else."""
        return self.url.removesuffix("in")

    def wait_for(self, count: int, seconds: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(self.deliveries) < count:
            time.sleep(0.05)
        return self.deliveries


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.deliveries.append({
                    "path": self.path, "headers": dict(self.headers.items()), "body": body,
                    "sha256": hashlib.sha256(body).hexdigest(),
                })  # fmt: skip
            if receiver.behaviour == "hang":
                time.sleep(REPLAY_TIMEOUT_SECONDS * 3)
            elif receiver.behaviour == "slow":
                time.sleep(SLOW_SECONDS)
            status = 503 if receiver.behaviour == "unavailable" else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with receiver.lock:
                receiver.health_checks += 1
            self.send_response(503 if receiver.behaviour == "unavailable" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
    target.url = f"http://127.0.0.1:{server.server_address[1]}/in"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield target
    server.shutdown()


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
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


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
