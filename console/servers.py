"""How Tideline's web server is started: by `serve`, and by the benchmarks the same way."""

from __future__ import annotations

import sys


def web_server_command(*, host: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "console.wsgi:application",
        "--bind", f"{host}:{port}",
        "--workers", str(workers),
        "--config", "python:console.gunicorn_conf",
        "--graceful-timeout", "20",
        "--timeout", "60",
        "--no-control-socket",
    ]  # fmt: skip
