"""A Celery worker and beat as `serve` runs them, for the lag's summarizer."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


@contextmanager
def celery_running() -> Iterator[Path]:
    """A Celery worker and beat as `serve` runs them; yields their log file."""
    home = Path(tempfile.mkdtemp(prefix="tideline-bench-celery-"))
    celery = [sys.executable, "-m", "celery", "-A", "console"]
    commands = [
        [*celery, "worker", "--concurrency", "2", "--loglevel", "WARNING"],
        [*celery, "beat", "--schedule", str(home / "celerybeat-schedule"), "--loglevel", "WARNING"],
    ]
    log = home / "celery.log"
    with log.open("wb") as output:
        processes = [
            subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603 - our own
            for command in commands
        ]
        try:
            _worker_wait(processes, log)
            yield log
        finally:
            _processes_stop(processes)


def _worker_wait(processes: list[subprocess.Popen[bytes]], log: Path) -> None:
    from console.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError(f"Celery exited at start; see {log}")
        if app.control.ping(timeout=1.0):
            return
    raise RuntimeError(f"the Celery worker did not answer within 60 s; see {log}")


def _processes_stop(processes: list[subprocess.Popen[bytes]]) -> None:
    family = []
    for process in processes:
        try:
            family += [
                psutil.Process(process.pid),
                *psutil.Process(process.pid).children(recursive=True),
            ]
        except psutil.NoSuchProcess:
            continue
        process.terminate()
    _, alive = psutil.wait_procs(family, timeout=30)
    for survivor in alive:
        survivor.kill()
    psutil.wait_procs(alive, timeout=5)
