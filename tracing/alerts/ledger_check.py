"""The ledger's verification, as alerts see it: the latest finished run, or no data yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tracing.ledger.models import VerificationRun


@dataclass(frozen=True)
class LedgerVerification:
    ok: bool
    at: datetime
    message: str


def ledger_verification_latest(*, now: datetime) -> LedgerVerification | None:
    """The latest finished verification at or before `now`, or None when none has run."""
    latest = VerificationRun.objects.filter(finished_at__lte=now).order_by("-finished_at").first()
    if latest is None or latest.finished_at is None:
        return None
    return LedgerVerification(ok=bool(latest.ok), at=latest.finished_at, message=latest.problem)
