"""Gunicorn settings used by `manage.py serve`."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess

# The application (Django, its URLs and views) is imported once, in the master, and the
# workers are forked from it: on a busy machine four workers importing it each took most of
# a first start's minute. Nothing opens a connection or a thread while importing it.
preload_app = True


def when_ready(server: Any) -> None:
    # Django resolves its URLconf (importing every view) on a worker's first request; done
    # here, before the workers are forked, it is done once.
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - evaluated for its imports


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's live gauges must not linger in the shared metrics directory.
    multiprocess.mark_process_dead(worker.pid)
