"""`make run` on a fresh clone, timed: when does the dashboard show the simulated company?

Clones a branch into a temporary directory, runs `make run` there with DATABASE_URL and
REDIS_URL unset (try-out mode: embedded PostgreSQL and Redis under .tideline/), signs in as
the admin it prints, and polls the dashboard and the flows API until completed, stalled,
failed and missing flows and waiting dead letters have all shown. Prints when each first
showed (seconds from `make run`), the machine's load while it ran, and the CPU seconds each
piece (web, worker, beat, simulator, PostgreSQL, Redis...) had used by then.

    python docs/first_run.py [--branch main] [--venv /path/to/.venv] [--rabbitmq]

--venv lends the clone an installed virtualenv, so the figure is the start and not the
download of the dependencies. Without --rabbitmq the broker's URL points nowhere, as on a
newcomer's machine, and QMS's dead letters go through the dead-letter API.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PORT = 8000
# What the dashboard shows once the world is there (the markup docs/screenshots.py waits for).
DASHBOARD = {
    "completed": r'count-completed">[1-9]',
    "stalled": r'count-stalled">[1-9]',
    "failed": r'count-failed">[1-9]',
    "missing": r"no run since",
    "dead letters": r"dashboard-dead-letters.*?QMS",
}
PIECES = (  # the first whose words a process's command line all holds names it
    ("simulator", ("simulate",)),
    ("worker", ("celery", "worker")),
    ("beat", ("celery", "beat")),
    ("dead-letter consumer", ("consume_dead_letters",)),
    ("web", ("gunicorn",)),
    ("serve", ("serve",)),
    ("make", ("make",)),
    ("postgres", ("postgres",)),
    ("redis", ("redis-server",)),
)


class Run:
    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}
        self.loads: list[float] = []
        self.password = ""
        # The newcomer's make, from PATH, in its own session so it stops as one group.
        self.process = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=subprocess.PIPE,  # noqa: S607
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.log = (clone / "make-run.log").open("w")
        threading.Thread(target=self._read, daemon=True).start()

    def mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = time.monotonic() - self.started
            print(f"{self.marks[name]:6.0f} s  {name}", flush=True)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.write(f"{time.monotonic() - self.started:7.1f} {line}")
            self.log.flush()
            if found := re.search(r"admin / (\S+)", line):
                self.password = found[1]
                self.mark("admin password printed")
            if "Tideline is up" in line:
                self.mark("web server answers")
            if line.startswith("Simulating the seafood company"):
                self.mark("simulator: history begins")
            if "simulate [live]" in line:
                self.mark("simulator: history sent")

    def stop(self) -> None:
        if self.process.poll() is not None:
            print(f"make run exited with status {self.process.returncode}; see make-run.log")
            self.log.close()
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def signed_in(base: str, password: str) -> httpx.Client | None:
    client = httpx.Client(base_url=base, timeout=30)
    try:
        client.get("/login/")
        form = {"username": "admin", "password": password}
        form["csrfmiddlewaretoken"] = client.cookies["csrftoken"]
        answer = client.post("/login/", data=form)
    except (httpx.HTTPError, KeyError):
        client.close()
        return None
    if answer.status_code != 302:
        client.close()
        return None
    return client


def look(run: Run, client: httpx.Client) -> None:
    """One look at the dashboard and the flows API; marks what shows for the first time."""
    html = client.get("/").text
    for name, pattern in DASHBOARD.items():
        if re.search(pattern, html, re.S):
            run.mark(f"dashboard: {name}")
    for status in ("completed", "stalled", "failed", "partial"):
        answer = client.get("/api/v1/flows", params={"status": status, "limit": 1})
        if answer.status_code == 200 and answer.json().get("results"):
            run.mark(f"API: {status} flows")
    answer = client.get("/api/v1/flows/4711")
    if answer.status_code == 200 and "Certificate approved (QMS)" in answer.json()["sentence"]:
        run.mark("order 4711 stopped at QMS")


def cpu_seconds(clone: Path, run: Run) -> dict[str, float]:
    """CPU (user + system, with reaped children) of make's process tree and of the embedded
    servers (daemons of their own), by piece."""
    if run.process.poll() is not None:
        return {}
    roots = [psutil.Process(run.process.pid)]
    home = clone / ".tideline"
    for pidfile in (home / "pgdata" / "postmaster.pid", home / "redis" / "redis.pid"):
        try:
            roots.append(psutil.Process(int(pidfile.read_text().split()[0])))
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            continue
    seen: set[int] = set()
    totals: dict[str, float] = defaultdict(float)
    for root in roots:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
                cmdline = " ".join(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            words = set(cmdline.split())
            piece = next((name for name, wanted in PIECES if words >= set(wanted)), "other")
            if piece == "other" and "postgres" in cmdline:  # its backends: "postgres: ..."
                piece = "postgres"
            totals[piece] += times.user + times.system + times.children_user + times.children_system
    return dict(totals)


def clone_prepare(source: str, branch: str, venv: Path | None) -> Path:
    clone = Path(tempfile.mkdtemp(prefix="tideline-first-run-"))
    subprocess.run(  # noqa: S603
        ["git", "clone", "--quiet", "--branch", branch, source, str(clone)],  # noqa: S607
        check=True,
    )
    if venv is not None:
        # A virtualenv of its own whose pieces are the lent one's; make sees it installed.
        (clone / ".venv").mkdir()
        for part in venv.iterdir():
            if part.name != ".base-installed":
                (clone / ".venv" / part.name).symlink_to(part.resolve())
        (clone / ".venv" / ".base-installed").touch()
    return clone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default=str(ROOT), help="the repository to clone")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--venv", type=Path, help="an installed virtualenv to lend the clone")
    parser.add_argument("--rabbitmq", action="store_true", help="use RabbitMQ if it answers")
    parser.add_argument("--limit", type=float, default=900, help="give up after this many s")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards")
    options = parser.parse_args()
    clone = clone_prepare(options.source, options.branch, options.venv)
    drop = {"DATABASE_URL", "REDIS_URL", "TIDELINE_EMBEDDED", "TIDELINE_HOME", "VIRTUAL_ENV"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    if not options.rabbitmq:
        env["TIDELINE_AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens there
    print(f"make run in {clone} (branch {options.branch}); load {os.getloadavg()}", flush=True)
    run = Run(clone, env)
    client: httpx.Client | None = None
    cpu: dict[str, float] = {}
    try:
        while time.monotonic() - run.started < options.limit and run.process.poll() is None:
            run.loads.append(os.getloadavg()[0])
            if client is None and run.password:
                client = signed_in(f"http://127.0.0.1:{PORT}", run.password)
                if client is not None:
                    run.mark("signed in")
            if client is not None:
                try:
                    look(run, client)
                except httpx.HTTPError as error:  # a busy server's dropped request: look again
                    print(f"  ({error.__class__.__name__}: {error})", flush=True)
            if all(f"dashboard: {name}" in run.marks for name in DASHBOARD):
                cpu = cpu_seconds(clone, run)
                break
            time.sleep(2)
        else:
            cpu = cpu_seconds(clone, run)
    finally:
        run.stop()
        if client is not None:
            client.close()
    report(run, cpu)
    if options.keep:
        print(f"kept {clone}")
    else:
        shutil.rmtree(clone, ignore_errors=True)


def report(run: Run, cpu: dict[str, float]) -> None:
    loads = run.loads or [0.0]
    print(f"\nload average (1 min) while it ran: {min(loads):.1f} to {max(loads):.1f}, "
          f"mean {sum(loads) / len(loads):.1f}")  # fmt: skip
    for name, seconds in sorted(run.marks.items(), key=lambda item: item[1]):
        print(f"{seconds:6.0f} s  {name}")
    print("CPU seconds used by then:")
    for piece, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(f"  {piece:22} {seconds:7.1f}")
    if len(cpu):
        print(f"  {'all':22} {sum(cpu.values()):7.1f}")


if __name__ == "__main__":
    sys.exit(main())
