"""Helpers for tests that run Tideline's servers as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, server: subprocess.Popen[Any], seconds: float) -> None:
    """Until `url` answers 200; fails at once if the server process exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, (
            f"the server exited with {server.returncode} before {url} answered"
        )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {seconds:.0f} s")


def test_database_url() -> str:
    """The URL of the database this test session runs on, for worker processes to share it."""
    from django.db import connection

    database = connection.settings_dict
    host = database["HOST"] or ""
    if host.startswith("/"):  # the embedded PostgreSQL listens on a unix socket
        return f"postgresql://{database['USER']}@:{database['PORT']}/{database['NAME']}?host={host}"
    return f"postgresql://{database['USER']}@{host}:{database['PORT']}/{database['NAME']}"


def celery_worker(
    schedule: str, *, concurrency: int = 1, beat: bool = True, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real Celery worker (prefork, with beat unless told otherwise) on the test database.

    It leads its own process group, so `worker_stop` can end its pool and embedded beat too.
    """
    import sys
    from pathlib import Path

    from django.conf import settings

    command = [
        sys.executable, "-m", "celery", "-A", "console", "worker", "--concurrency", str(concurrency),
        "--loglevel", "WARNING", "--schedule", schedule, "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if beat:
        command.append("--beat")
    environment = {
        **os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL, **(env or {}),
    }  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        command, cwd=root, env=environment, stdout=subprocess.DEVNULL, start_new_session=True
    )


def worker_stop(worker: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Stops a `celery_worker` and every process it started.

    A warm shutdown lets the running task finish; a worker that does not stop in time is
    killed. Either way its whole process group is killed after: a worker terminated while
    starting up can leave its embedded beat behind, which would go on running tasks
    against the next test's database.
    """
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=seconds)
        except subprocess.TimeoutExpired:  # a loaded machine: a long task may still run
            worker.kill()
            worker.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # the group may already be empty
        os.killpg(worker.pid, signal.SIGKILL)
