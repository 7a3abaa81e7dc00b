"""`manage.py bench ingest|...`: the performance figures the issues name, measured here."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Measure Tideline's throughput and latency against a live server on this machine."

    def add_arguments(self, parser: CommandParser) -> None:
        benches = parser.add_subparsers(dest="bench", required=True)
        ingest = benches.add_parser(
            "ingest", help="spans/s and records/s through the ingest endpoints"
        )
        ingest.add_argument("--requests", type=int, default=100, help="requests per stream")
        ingest.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
        ingest.add_argument(
            "--workers",
            type=int,
            default=min(4, 2 * (os.cpu_count() or 1)),
            help="gunicorn workers",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from tracing.ingest import bench

        bench.run(
            requests=options["requests"], clients=options["clients"], workers=options["workers"],
            report=self.stdout.write,
        )  # fmt: skip
