"""`manage.py ledger export`: the same job the /ledger/ page queues, written in this process."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tracing.ledger.export import (
    ExportFilters,
    ExportRefused,
    ledger_export_request,
    ledger_export_run,
)
from tracing.ledger.models import ExportJob


def export_arguments(parser: CommandParser) -> None:
    parser.add_argument("--since", help="entries from this time (2025-03-07 or 2025-03-07T08:00Z)")
    parser.add_argument("--until", help="entries before this time")
    parser.add_argument(
        "--system", default="", help="highlight this system's entries in the summary"
    )
    parser.add_argument("--correlation-id", default="", help="highlight this flow's entries")
    parser.add_argument("--from-checkpoint", help="checkpoint.txt from an earlier export")
    parser.add_argument("--out", required=True, help="the bundle to write (a .zip)")


def moment(text: str | None, option: str) -> datetime | None:
    """An ISO date or date-time; without a zone, the console's time zone."""
    if not text:
        return None
    parsed = parse_datetime(text.replace("Z", "+00:00"))
    if parsed is None:
        day = parse_date(text)
        parsed = datetime.combine(day, time()) if day else None
    if parsed is None:
        raise CommandError(f"{option}: {text[:40]!r} is not a date or time (2025-03-07T08:00Z)")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def export_run(options: dict[str, Any]) -> str:
    """Ask for the export, write it to --out; returns the line to print."""
    out = Path(options["out"]).resolve()
    if not out.parent.is_dir():
        raise CommandError(f"--out: the folder {out.parent} does not exist")
    prior = ""
    if options.get("from_checkpoint"):
        try:
            prior = Path(options["from_checkpoint"]).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"--from-checkpoint: {error}") from None
    filters = ExportFilters(
        since=moment(options.get("since"), "--since"), until=moment(options.get("until"), "--until"),
        system=options.get("system") or "", correlation_id=options.get("correlation_id") or "",
        prior_checkpoint=prior,
    )  # fmt: skip
    actor = f"{getpass.getuser()} (manage.py ledger export)"
    try:
        job = ledger_export_request(user=None, actor=actor, filters=filters, now=timezone.now())
    except ExportRefused as refused:
        raise CommandError(str(refused)) from None
    done = ledger_export_run(job_id=job.pk, now=datetime.now(UTC), destination=out)
    if done is None or done.state != ExportJob.State.DONE:
        raise CommandError(done.error if done else "the export was taken by another process")
    return (
        f"Wrote {out}: entries {done.begin}..{done.end - 1} ({done.entries}) against tree size "
        f"{done.checkpoint.size}, {done.bytes} bytes."
    )
