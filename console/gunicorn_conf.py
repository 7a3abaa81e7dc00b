"""Gunicorn settings used by `manage.py serve`."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's live gauges must not linger in the shared metrics directory.
    multiprocess.mark_process_dead(worker.pid)
