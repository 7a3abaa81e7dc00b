"""`manage.py bench ingest|flows|replay|ledger`: the performance figures the issues name, measured here."""

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
        ingest.add_argument(
            "--profile",
            action="store_true",
            help="instead: CPU µs per span and record, stage by stage, in this process",
        )
        ingest.add_argument("--rounds", type=int, default=5, help="--profile: rounds measured")
        self._add_flows(benches)
        self._add_replay(benches)
        self._add_ledger(benches)

    def _add_ledger(self, benches: Any) -> None:
        ledger = benches.add_parser(
            "ledger",
            help="ledger cost on ingest, sequencer, verify, inclusion proofs, export (issue 7)",
        )
        ledger.add_argument("--entries", type=int, default=1_000_000, help="log size, built once")
        ledger.add_argument("--sequence", type=int, default=100_000, help="entries to sequence")
        ledger.add_argument("--proofs", type=int, default=500, help="inclusion proof requests")
        ledger.add_argument("--rounds", type=int, default=3, help="ingest rounds, on and off")
        ledger.add_argument("--requests", type=int, default=20, help="ingest requests per round")
        ledger.add_argument("--clients", type=int, default=4, help="concurrent ingest clients")
        ledger.add_argument("--export", type=int, default=100_000, help="entries to export")
        ledger.add_argument(
            "--workers",
            type=int,
            default=min(4, 2 * (os.cpu_count() or 1)),
            help="gunicorn workers",
        )
        ledger.add_argument(
            "--yes-wipe",
            action="store_true",
            help="run on a database whose name lacks 'bench' (its log grows by a million entries)",
        )

    def _add_replay(self, benches: Any) -> None:
        replay = benches.add_parser(
            "replay", help="bulk replays/s to a local HTTP receiver and a RabbitMQ queue"
        )
        replay.add_argument("--dead-letters", type=int, default=10_000, help="HTTP dead letters")
        replay.add_argument("--amqp", type=int, default=1_000, help="AMQP dead letters (0: none)")
        replay.add_argument("--processes", type=int, default=2, help="Celery worker processes")
        replay.add_argument(
            "--amqp-url",
            default=os.environ.get("TIDELINE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        )
        replay.add_argument("--yes-wipe", action="store_true", help="run on any database")

    def _add_flows(self, benches: Any) -> None:
        flows = benches.add_parser(
            "flows",
            help="a generated seafood world: flow pages, API, search, dashboard, summarizer lag",
        )
        flows.add_argument("--spans", type=int, default=2_000_000)
        flows.add_argument("--records", type=int, default=500_000)
        flows.add_argument("--flows", type=int, default=100_000, help="orders in the world")
        flows.add_argument("--requests", type=int, default=500, help="requests per read figure")
        flows.add_argument("--seconds", type=float, default=60.0, help="ingest time for the lag")
        flows.add_argument("--clients", type=int, default=4, help="concurrent readers")
        flows.add_argument(
            "--workers",
            type=int,
            default=min(4, 2 * (os.cpu_count() or 1)),
            help="gunicorn workers",
        )
        flows.add_argument(
            "--reuse-world", action="store_true", help="measure the world already stored"
        )
        flows.add_argument(
            "--yes-wipe",
            action="store_true",
            help="run on a database whose name lacks 'bench' (its flows and facts are replaced)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["bench"] == "flows":
            self._flows(options)
            return
        if options["bench"] == "replay":
            self._replay(options)
            return
        if options["bench"] == "ledger":
            self._ledger(options)
            return
        if options["profile"]:
            from tracing.ingest import bench_profile

            bench_profile.run(
                requests=options["requests"], rounds=options["rounds"], report=self.stdout.write
            )
            return
        from tracing.ingest import bench

        bench.run(
            requests=options["requests"], clients=options["clients"], workers=options["workers"],
            report=self.stdout.write,
        )  # fmt: skip

    def _flows(self, options: dict[str, Any]) -> None:
        from tracing.flows import bench

        bench.run(
            spans=options["spans"], records=options["records"], flows=options["flows"],
            requests=options["requests"], seconds=options["seconds"], clients=options["clients"],
            workers=options["workers"], yes_wipe=options["yes_wipe"],
            reuse_world=options["reuse_world"], report=self.stdout.write,
        )  # fmt: skip

    def _replay(self, options: dict[str, Any]) -> None:
        from replay import bench

        bench.database_check(yes_wipe=options["yes_wipe"])
        runs = bench.bench_replay(
            http_count=options["dead_letters"], amqp_count=options["amqp"],
            processes=options["processes"], amqp_url=options["amqp_url"], out=self.stdout,
        )  # fmt: skip
        self.stdout.write(bench.report(runs, options["processes"]))

    def _ledger(self, options: dict[str, Any]) -> None:
        from tracing.ledger import bench

        bench.database_check(yes_wipe=options["yes_wipe"])
        bench.run(
            entries=options["entries"], sequence=options["sequence"], proofs=options["proofs"],
            rounds=options["rounds"], requests=options["requests"], clients=options["clients"],
            workers=options["workers"], export=options["export"], report=self.stdout.write,
        )  # fmt: skip
