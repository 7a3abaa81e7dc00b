"""The ledger's verification, as alerts see it: failing, passing, or no data.

The ledger app is built separately and may be absent; alerts must not import it at module
load. It is expected to keep its verification runs in a model `ledger.VerificationRun` with
`finished_at` (datetime), `ok` (bool) and `message` (text). Anything else reads as no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.apps import apps
from django.core.exceptions import FieldError


@dataclass(frozen=True)
class LedgerVerification:
    ok: bool
    at: datetime
    message: str


def ledger_verification_latest(*, now: datetime) -> LedgerVerification | None:
    """The latest finished verification at or before `now`, or None: no ledger, no runs."""
    if not apps.is_installed("tracing.ledger"):
        return None
    try:
        runs = apps.get_model("ledger", "VerificationRun")
        latest = runs.objects.filter(finished_at__lte=now).order_by("-finished_at").first()
    except (LookupError, FieldError):
        return None
    if latest is None:
        return None
    return LedgerVerification(
        ok=bool(getattr(latest, "ok", True)),
        at=latest.finished_at,
        message=str(getattr(latest, "message", "")),
    )
