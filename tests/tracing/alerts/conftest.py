"""Alerts tests: a real SMTP server (aiosmtpd), a real webhook receiver, a real Celery worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.processes import celery_worker, free_port
from tracing.alerts.delivery import notification_deliver, notifications_due


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp(settings: Any) -> Iterator[Mailbox]:
    """A real SMTP server; Django's SMTP backend points at it."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    yield mailbox
    controller.stop()


@dataclass
class Receiver:
    """A webhook receiver: answers with `statuses` in turn (then 200), records every POST."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return self.url.split("/")[2]

    def wait_for(self, count: int, seconds: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(self.posts) < count:
            time.sleep(0.05)
        return self.posts


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.posts.append(
                    {"headers": dict(self.headers.items()), "body": body, "answered": status}
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    target = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
    target.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tideline"
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = [target.host]
    settings.TIDELINE_BASE_URL = "https://tideline.seafood.example"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield target
    server.shutdown()


@pytest.fixture
def deliver_due() -> Callable[[datetime], int]:
    """Deliver, in this process, every notification due at `now` (one try each)."""

    def deliver(now: datetime) -> int:
        due = notifications_due(now=now)
        for notification_id in due:
            notification_deliver(notification_id=notification_id, now=now)
        return len(due)

    return deliver


@pytest.fixture
def worker(
    transactional_db: Any, tmp_path: Path, receiver: Receiver
) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(*, beat: bool = False, env: dict[str, str] | None = None) -> Any:
        process = celery_worker(
            str(tmp_path / "beat-schedule"), beat=beat,
            env={"TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS": receiver.host,
                 "TIDELINE_ALERT_RETRY_BASE_SECONDS": "0.2", **(env or {})},
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
