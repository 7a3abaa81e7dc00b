"""A real ledger for export tests: records and dead letters through the ingest API, journal
entries, the sequencer and checkpoints; and verify.py run as an auditor runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone

from console.services import journal_append
from tests.tracing.seafood import Runtime
from tracing.ledger.services import ledger_checkpoint, ledger_sequence

PYTHON3 = shutil.which("python3") or sys.executable
VERIFY_PY = Path(__file__).resolve().parents[3] / "tracing" / "ledger" / "verify.py"


def seafood_day(runtime: Runtime, day: datetime, orders: range) -> None:
    """Orders of one day: ERP, WMS and QMS records, one QMS dead letter; then sequenced and
    signed, so that each day ends at a checkpoint."""
    for n in orders:
        at = day + timedelta(minutes=n)
        order = f"ORD-{4711 + n}"
        runtime.record(
            "ERP",
            "order_created",
            "delivered",
            at,
            correlation=order,
            payload=f'{{"order": "{order}"}}',
        )
        runtime.record(
            "WMS", "stock_reserved", "delivered", at + timedelta(seconds=5), correlation=order
        )
        runtime.record(
            "QMS", "certificate_approved", "delivered", at + timedelta(seconds=9), correlation=order
        )
    runtime.send()
    runtime.dead_letter("QMS", day + timedelta(hours=1), correlation=f"ORD-{4711 + orders.start}")
    journal_append(actor="charlie", action="login", subject="user:charlie")
    ledger_sequence(now=timezone.now())
    ledger_checkpoint(now=timezone.now())


def verify_alone(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """verify.py copied into an otherwise empty folder, run by a bare Python 3."""
    alone = bundle.parent / "auditor"
    alone.mkdir(exist_ok=True)
    script = shutil.copy(VERIFY_PY, alone / "verify.py")
    assert sorted(p.name for p in alone.iterdir()) == ["verify.py"]
    return subprocess.run(
        [PYTHON3, "-I", "-S", str(script), str(bundle), *args],
        capture_output=True, text=True, cwd=alone, timeout=120, check=False,
    )  # fmt: skip
