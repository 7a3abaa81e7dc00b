"""`manage.py ledger verify [--full] [--key VERIFIER_KEY]`, `manage.py ledger keygen` and
`manage.py ledger export ... --out FILE.zip` (export_cli.py).

verify exits 0 only when every entry and checkpoint holds, else 1 naming the first that
does not.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracing.ledger.export_cli import export_arguments, export_run
from tracing.ledger.note import NoteError, signing_key_generate, verifier_key_parse
from tracing.ledger.services import ledger_verify
from tracing.ledger.signing import origin_new


class Command(BaseCommand):
    help = "The ledger: verify the log and its checkpoints, or make a signing key."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        verify = actions.add_parser("verify", help="recompute the tree and check every checkpoint")
        verify.add_argument(
            "--full",
            action="store_true",
            help="from the first entry, not the last verified checkpoint",
        )
        verify.add_argument(
            "--key", help="verifier key to check signatures with (default: this installation's)"
        )
        keygen = actions.add_parser("keygen", help="print a new TIDELINE_SIGNING_KEY")
        keygen.add_argument("--host", help="the host name in the log's origin")
        export_arguments(actions.add_parser("export", help="write an export bundle (a zip)"))

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "keygen":
            self.stdout.write(signing_key_generate(origin_new(options.get("host"))).text())
            return
        if options["action"] == "export":
            self.stdout.write(export_run(options))
            return
        try:
            key = verifier_key_parse(options["key"]) if options.get("key") else None
        except NoteError as error:
            raise CommandError(f"--key: {error}") from None
        started = time.monotonic()
        run = ledger_verify(now=timezone.now(), full=options["full"], key=key)
        seconds = time.monotonic() - started
        if not run.ok:
            self.stderr.write(f"FAILED: {run.problem}")
            sys.exit(1)
        self.stdout.write(
            f"OK: entries {run.from_size}..{run.verified_size} recomputed, "
            f"{run.checkpoints} checkpoint(s) hold, {seconds:.1f} s"
        )
