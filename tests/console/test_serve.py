"""`manage.py serve` brings up the whole of Tideline and takes all of it down again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.processes import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


def try_out_environment(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "TIDELINE_EMBEDDED"}
    }
    return {**env, "TIDELINE_HOME": str(home)}


def start_serve(home: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve",
            "--port",
            str(port),
            "--web-workers",
            "2",
            "--celery-workers",
            "1",
        ],
        cwd=ROOT,
        env=try_out_environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def stop_serve(server: subprocess.Popen[str]) -> str:
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=90) == 0
    return server.stdout.read() if server.stdout else ""


def sign_in(base: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=10) as client:
        client.get("/login/")
        form = {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        }
        client.post("/login/", data=form)
        return client.get("/")


def requests_counted_by_metrics(base: str, *, healthz_calls: int) -> float:
    """GET /healthz n times, then the sum of answered requests one scrape of /metrics reports.

    The requests spread over the gunicorn workers; only the multiprocess collector sees them all.
    """
    for _ in range(healthz_calls):
        httpx.get(f"{base}/healthz", timeout=5)
    scrape = httpx.get(f"{base}/metrics", timeout=5).text
    counted = re.findall(
        r'^tideline_http_requests_total\{method="GET",status="200"\} (\S+)$', scrape, re.MULTILINE
    )
    return sum(float(value) for value in counted)


def test_serve_runs_on_embedded_services_and_stops_every_child(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_serve(tmp_path, port)
    try:
        wait_until_ready(f"{base}/readyz", server, seconds=180)
        family = psutil.Process(server.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in family)
        assert "gunicorn" in names and "worker" in names and "beat" in names
        postgres = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(tmp_path / "pgdata") in " ".join(p.info["cmdline"] or [])
        ]
        assert postgres, "the embedded PostgreSQL is not running"
        assert requests_counted_by_metrics(base, healthz_calls=20) >= 20
        output = stop_serve(server)
    finally:
        if server.poll() is None:
            server.kill()
    _, alive = psutil.wait_procs(family + postgres, timeout=30)  # a loaded machine is slow to reap
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    password = re.search(r"First admin account: admin / (\S+)", output)
    assert password, output

    # A second start keeps the data, prints no password again, and the first one signs in.
    server = start_serve(tmp_path, port)
    try:
        wait_until_ready(f"{base}/readyz", server, seconds=120)
        dashboard = sign_in(base, "admin", password.group(1))
        assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
        assert "First admin account" not in stop_serve(server)
    finally:
        if server.poll() is None:
            server.kill()


def test_serve_no_embedded_refuses_without_urls(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "serve", "--no-embedded"],
        cwd=ROOT,
        env=try_out_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == "Tideline: DATABASE_URL and REDIS_URL not set and --no-embedded given; refusing to start."
    )
    assert not (tmp_path / "pgdata").exists()


def test_demo_is_refused_on_a_real_database(tmp_path: Path) -> None:
    """--demo would pour a simulated company into an installation's own database."""
    environment = {key: value for key, value in os.environ.items() if key != "TIDELINE_EMBEDDED"}
    refused = subprocess.run(
        [sys.executable, "manage.py", "serve", "--demo", "--port", str(free_port())],
        cwd=ROOT,
        env={**environment, "TIDELINE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "runs only in try-out mode" in refused.stderr
    assert "Traceback" not in refused.stderr
