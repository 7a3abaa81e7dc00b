"""`manage.py simulate`: the seafood company of DESIGN.md, feeding a running Tideline.

It talks to Tideline only as a customer's integration runtime would: spans over OTLP/HTTP
through the OpenTelemetry SDK, audit records and dead letters over the ingest API, dead
letters through a RabbitMQ dead-letter queue when `--amqp-url` is given. First a backdated
history ending now, then live until `--duration` has passed (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import re
import secrets
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import httpx
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.simulator.engine import Connections, Engine
from console.simulator.targets import AmqpTarget, Arrival, HttpTargets, Seen
from console.simulator.world import world_plan

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
WAIT_FOR_TIDELINE_SECONDS = 600


def duration(raw: str) -> timedelta:
    """`90`, `90s`, `15m`, `2h`, `3d`: seconds unless a unit says otherwise."""
    match = _DURATION.match(raw.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a duration like 30, 90s, 15m, 2h or 3d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def positive_rate(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 orders a minute, got {raw}")
    return value


class Command(BaseCommand):
    help = "Play the seafood company against a running Tideline: a backdated history, then live."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Tideline's base URL")
        parser.add_argument(
            "--token",
            help="an ingest token (or TIDELINE_SIMULATOR_TOKEN, kept off the command line); "
            "without either one is created for sender 'simulator'",
        )
        parser.add_argument(
            "--rate", type=positive_rate, default=0.5, help="orders a minute (default 0.5)"
        )
        parser.add_argument(
            "--duration",
            type=duration,
            help="how long to run live, e.g. 30, 10m (default: until stopped)",
        )
        parser.add_argument(
            "--history",
            type=duration,
            default=timedelta(hours=60),
            help="how far back the history starts, e.g. 2h (default 60h: a weekend)",
        )
        parser.add_argument("--seed", type=int, help="the same seed makes the same world")
        parser.add_argument(
            "--amqp-url",
            default=os.environ.get("TIDELINE_AMQP_URL"),
            help="RabbitMQ, where QMS dead letters go through a dead-letter queue (default TIDELINE_AMQP_URL)",
        )
        parser.add_argument(
            "--amqp-queue",
            default="qms.certificates",
            help="the QMS certificate queue; its dead-letter queue is this name + '.dlq'",
        )
        parser.add_argument(
            "--targets",
            action="store_true",
            help="run receivers for QMS and FIN that deduplicate, and name them in dead letters",
        )
        parser.add_argument(
            "--targets-port", type=int, default=0, help="the HTTP targets' port (default: any)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        seed = options["seed"] if options["seed"] is not None else secrets.randbelow(10_000)
        token = options["token"] or os.environ.get("TIDELINE_SIMULATOR_TOKEN") or self._token()
        now = datetime.now(UTC)
        world = world_plan(
            seed=seed, now=now, history=options["history"], rate_per_minute=options["rate"]
        )
        self.stdout.write(
            f"Simulating the seafood company: seed {seed}, history from "
            f"{world.start:%Y-%m-%d %H:%M} UTC to {now.isoformat()}, then live."
        )
        self.stdout.flush()
        arrivals: queue.Queue[Arrival] = queue.Queue()
        receivers = self._targets(options, arrivals) if options["targets"] else []
        connections = Connections(
            url=options["url"],
            token=token,
            amqp_url=options["amqp_url"],
            amqp_queue=options["amqp_queue"],
            targets_origin=receivers[0].origin if receivers else None,
        )
        engine = Engine(world, connections, progress=sys.stderr)
        engine.arrivals = arrivals
        try:
            engine.history_make()
            self._wait_for_tideline(options["url"])
            # The HTTP targets answer at once: the tour's flows arrive first, and an operator
            # may replay one while older days are still being sent. The queue's consumer
            # waits for the history, whose certificates it would take before they died.
            http, queues = receivers[:1], receivers[1:]
            for receiver in http:
                receiver.start()
            engine.history_send()
            for receiver in queues:
                receiver.start()
            engine.live(duration=options["duration"])
        except KeyboardInterrupt:
            engine.close()
        finally:
            for receiver in receivers:
                receiver.stop()
        self.stdout.write(
            f"Simulated {len(world.orders)} orders, {len(world.batches)} batches and "
            f"{len(world.stock_runs)} stock exports: {engine.services.spans_made} spans, "
            f"{engine.sink.sent} records, {engine.dead_letters_sent} dead letters."
        )

    def _wait_for_tideline(self, url: str) -> None:
        """Under `serve --demo` the simulator starts with the web server and makes its history
        while the server boots; what it made is sent once Tideline answers."""
        deadline = time.monotonic() + WAIT_FOR_TIDELINE_SECONDS
        while True:
            try:
                httpx.get(f"{url.rstrip('/')}/healthz", timeout=5).raise_for_status()
                return
            except httpx.HTTPError as error:
                if time.monotonic() > deadline:
                    raise CommandError(f"Tideline does not answer at {url}: {error}") from None
                time.sleep(0.5)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def _token(self) -> str:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("ingest_token", "create", "--sender", "simulator", stdout=out, stderr=err)
        except CommandError as error:
            raise CommandError(f"Cannot create an ingest token ({error}); give --token.") from None
        return out.getvalue().strip().splitlines()[-1]

    def _targets(self, options: dict[str, Any], arrivals: queue.Queue[Arrival]) -> list[Any]:
        seen = Seen()
        http = HttpTargets(port=options["targets_port"], arrivals=arrivals, seen=seen)
        self.stdout.write(f"Targets: QMS and FIN receive on {http.origin}")
        receivers: list[Any] = [http]
        if options["amqp_url"]:
            receivers.append(
                AmqpTarget(
                    amqp_url=options["amqp_url"],
                    queue_name=options["amqp_queue"],
                    arrivals=arrivals,
                    seen=seen,
                )
            )
        return receivers
