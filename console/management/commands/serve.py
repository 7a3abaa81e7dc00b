"""`manage.py serve`: the whole of Tideline on one machine, as children of one process.

Migrates, creates the first admin on an empty database, then runs gunicorn (web), a
Celery worker and Celery beat. With --demo (what `make run` passes in try-out mode), also
the simulated seafood company and its targets (console.simulator.demo). Ctrl-C or SIGTERM stops every child, then the embedded
servers of try-out mode; if one child dies, the rest are stopped too, so nothing runs
half-alive.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from console.access import Role
from console.embedded import stop_services, try_out
from console.servers import web_server_command
from console.services import user_create
from console.simulator.demo import Demo, demo_prepare

STOP_GRACE_SECONDS = 30


class Command(BaseCommand):
    help = (
        "Run Tideline: web server, Celery worker and beat, stopped together by Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--web-workers", type=int, default=min(4, 2 * (os.cpu_count() or 1)))
        parser.add_argument("--celery-workers", type=int, default=2)
        parser.add_argument(
            "--demo", action="store_true",
            help="also load the example flows and run the simulated seafood company against it",
        )  # fmt: skip
        parser.add_argument(
            "--no-embedded",
            action="store_true",
            help="refuse to start without DATABASE_URL and REDIS_URL instead of embedded servers",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._ask_to_stop)
        signal.signal(signal.SIGINT, self._ask_to_stop)
        children: dict[str, subprocess.Popen[bytes]] = {}
        exit_code = 0
        try:
            if options["demo"] and not try_out():
                raise CommandError(
                    "--demo feeds a simulated seafood company into the database, so it runs only "
                    "in try-out mode (DATABASE_URL unset: the embedded PostgreSQL in TIDELINE_HOME)."
                )
            demo = self._prepare(demo=options["demo"], port=options["port"])
            env = {**self._child_environment(), **(demo.environment if demo else {})}
            url = f"http://{options['host']}:{options['port']}"
            commands = self._commands(options)
            if demo and (consumer := demo.dead_letter_consumer_command()):
                commands["dead-letters"] = consumer
            if demo:  # it makes its history while the web server boots, and sends it once up
                commands["simulator"] = demo.simulator_command(url)
            for name, command in commands.items():
                children[name] = subprocess.Popen(command, env=env)  # noqa: S603 - our own fixed commands
            self._announce_when_up(url, children)
            if demo and not self.stopping:
                self.stdout.write(self._demo_words(demo))
            exit_code = self._watch(children)
        finally:
            self._stop(children)
            stop_services()
        sys.exit(exit_code)

    def _demo_words(self, demo: Demo) -> str:
        letters = "RabbitMQ's dead-letter queue" if demo.amqp_url else "the dead-letter API"
        return (
            "Demo: the seafood company's systems now feed this console (a weekend of history, "
            f"then live); QMS dead letters arrive through {letters}; replays reach the "
            f"stand-in QMS and FIN at {demo.targets_origin}"
        )

    def _ask_to_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _prepare(self, *, demo: bool, port: int) -> Demo | None:
        # Collecting (and compressing) the static files needs no database: it runs beside the
        # migrations, which mostly wait for PostgreSQL.
        with ThreadPoolExecutor(max_workers=1) as pool:
            statics = pool.submit(call_command, "collectstatic", interactive=False, verbosity=0)
            call_command("migrate", interactive=False, verbosity=0)
            self._first_admin()
            prepared = demo_prepare(port=port) if demo else None
            statics.result()
        connections.close_all()  # children open their own; this process holds none while it waits
        return prepared

    def _first_admin(self) -> None:
        if not get_user_model().objects.exists():
            password = secrets.token_urlsafe(12)
            user_create(username="admin", role=Role.ADMIN, password=password, actor="serve")
            self.stdout.write(
                self.style.WARNING(
                    f"First admin account: admin / {password}  (shown only this once)"
                )
            )

    def _child_environment(self) -> dict[str, str]:
        metrics_dir = Path(settings.TIDELINE_HOME) / "metrics"
        shutil.rmtree(
            metrics_dir, ignore_errors=True
        )  # counters of a previous run are not this run's
        metrics_dir.mkdir(parents=True)
        return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    def _commands(self, options: dict[str, Any]) -> dict[str, list[str]]:
        python = sys.executable
        home = Path(settings.TIDELINE_HOME)
        return {
            "web": web_server_command(
                host=options["host"], port=options["port"], workers=options["web_workers"]
            ),
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "console",
                "worker",
                "--concurrency",
                str(options["celery_workers"]),
                "--loglevel",
                "INFO",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "console",
                "beat",
                "--schedule",
                str(home / "celerybeat-schedule"),
                "--loglevel",
                "INFO",
            ],
        }

    def _announce_when_up(self, url: str, children: dict[str, subprocess.Popen[bytes]]) -> None:
        while not self.stopping and all(child.poll() is None for child in children.values()):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310 - our own server
                    self.stdout.write(
                        self.style.SUCCESS(f"Tideline is up on {url}/  (Ctrl-C stops it)")
                    )
                    return
            except OSError:
                time.sleep(0.3)

    def _watch(self, children: dict[str, subprocess.Popen[bytes]]) -> int:
        while not self.stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    self.stderr.write(
                        f"serve: {name} exited with status {code}; stopping Tideline."
                    )
                    return 1
            time.sleep(0.3)
        return 0

    def _stop(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        """SIGTERM to every child; SIGKILL to whatever of them (or theirs) outlives the grace."""
        family = []
        for child in children.values():
            try:
                family.append(psutil.Process(child.pid))
                family.extend(psutil.Process(child.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                continue
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_SECONDS)
        for process in alive:
            process.kill()
        psutil.wait_procs(alive, timeout=5)
        for child in children.values():
            child.poll()
