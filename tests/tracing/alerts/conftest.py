"""Alerts tests: a real SMTP server (aiosmtpd), a real webhook receiver (the shared one of
tests/receivers.py), a real Celery worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.processes import celery_worker, free_port, worker_stop
from tests.receivers import Receiver
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


@pytest.fixture
def receiver(receiver: Receiver, settings: Any) -> Receiver:
    """The shared receiver (tests/receivers.py) as a webhook on the allow-list."""
    settings.TIDELINE_ALERT_WEBHOOK_ALLOWED_HOSTS = [receiver.host]
    settings.TIDELINE_BASE_URL = "https://tideline.seafood.example"
    return receiver


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
        worker_stop(process)
