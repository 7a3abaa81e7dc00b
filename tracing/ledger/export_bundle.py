"""Writing an export bundle exactly as bundle_format.md lays it out.

Entries are streamed from the database into the zip a page at a time (keyset on the index),
hashed as they go into the manifest's digest, so memory stays bounded however long the range.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connection
from django.template.loader import render_to_string

from tracing.ledger import selectors
from tracing.ledger.canonical import rfc3339
from tracing.ledger.models import Checkpoint, ExportJob
from tracing.ledger.note import checkpoint_body_parse, note_verify, verifier_key_parse
from tracing.ledger.signing import signing_key

VERIFY_PY = Path(__file__).resolve().parent / "verify.py"
PAGE = 5_000
PROGRESS_EVERY = 10_000
HIGHLIGHTS_SHOWN = 500


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass
class Tally:
    """What the summary says about the entries, gathered while they stream past."""

    kinds: Counter[str] = field(default_factory=Counter)
    first_at: datetime | None = None
    last_at: datetime | None = None
    highlighted: int = 0
    highlights: list[dict[str, Any]] = field(default_factory=list)


class Bundle:
    """A zip being written: every file's SHA-256 is kept for the manifest."""

    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self.digests: dict[str, str] = {}

    def add(self, name: str, content: bytes) -> None:
        self.zip.writestr(name, content)
        self.digests[name] = "sha256:" + hashlib.sha256(content).hexdigest()


def bundle_write(
    job: ExportJob, path: Path, *, exported_at: datetime, progress: Callable[[int], None]
) -> int:
    """Write the job's bundle to `path`; returns its size in bytes."""
    latest = job.checkpoint
    first = _covering(job.begin + 1, latest)
    last = _covering(job.end, latest)
    bundle = Bundle(path)
    with bundle.zip:
        tally = _entries_write(bundle, job, progress)
        proof = selectors.range_proof(job.begin, job.end, latest.size)
        proof["left"] = [_b64(d) for d in proof["left"]]
        proof["right"] = [_b64(d) for d in proof["right"]]
        bundle.add("range.json", _json(proof))
        bundle.add("checkpoint.txt", latest.note.encode())
        bundle.add("checkpoints/first.txt", first.note.encode())
        bundle.add("checkpoints/last.txt", last.note.encode())
        consistency = {
            "first": _consistency(first.size, latest),
            "last": _consistency(last.size, latest),
        }
        if job.prior_checkpoint:
            prior_size = _size_of(job.prior_checkpoint)
            consistency["prior"] = _consistency(prior_size, latest)
            bundle.add("prior/checkpoint.txt", job.prior_checkpoint.encode())
        bundle.add("consistency.json", _json(consistency))
        key = signing_key()
        bundle.add("public-key.txt", (key.verifier_key + "\n").encode())
        bundle.add("verify.py", VERIFY_PY.read_bytes())
        context = _summary_context(job, tally, first, last, key.fingerprint, exported_at)
        bundle.add("summary.html", render_to_string("ledger/summary.html", context).encode())
        bundle.zip.writestr("manifest.json", _json(_manifest(job, bundle.digests, exported_at)))
    return path.stat().st_size


def _covering(size: int, latest: Checkpoint) -> Checkpoint:
    """The earliest checkpoint holding `size` entries (bundle_format.md's first and last)."""
    return selectors.checkpoint_covering(size) or latest


def _consistency(size: int, latest: Checkpoint) -> dict[str, Any]:
    proof = selectors.consistency_proof(size, latest.size)
    return {"from": size, "to": latest.size, "proof": [_b64(d) for d in proof]}


def _size_of(note: str) -> int:
    body = note_verify(note, verifier_key_parse(signing_key().verifier_key))
    return checkpoint_body_parse(body).size


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode() + b"\n"


def _entries_write(bundle: Bundle, job: ExportJob, progress: Callable[[int], None]) -> Tally:
    tally, digest, expected = Tally(), hashlib.sha256(), job.begin
    with bundle.zip.open("entries.jsonl", "w", force_zip64=True) as out:
        while expected < job.end:
            rows = _page(expected, job.end)
            for index, body, kind, system, correlation_id, at in rows:
                if index != expected:
                    raise LookupError(f"entry {expected} is missing from the log")
                line = bytes(body) + b"\n"
                out.write(line)
                digest.update(line)
                _tally(tally, job, index, kind, system, correlation_id, at)
                expected += 1
                if expected % PROGRESS_EVERY == 0:
                    progress(expected - job.begin)
            if not rows:
                raise LookupError(f"entry {expected} is missing from the log")
    bundle.digests["entries.jsonl"] = "sha256:" + digest.hexdigest()
    return tally


def _page(start: int, end: int) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT index, body, kind, system, correlation_id, at FROM ledger_entry "
            "WHERE index >= %s AND index < %s ORDER BY index LIMIT %s",
            [start, end, PAGE],
        )
        return list(cursor.fetchall())


def _tally(
    tally: Tally, job: ExportJob, index: int, kind: str, system: str | None,
    correlation_id: str | None, at: datetime,
) -> None:  # fmt: skip
    tally.kinds[kind] += 1
    tally.first_at = at if tally.first_at is None else min(tally.first_at, at)
    tally.last_at = at if tally.last_at is None else max(tally.last_at, at)
    if not (job.system or job.correlation_id):
        return
    if job.system and system != job.system:
        return
    if job.correlation_id and correlation_id != job.correlation_id:
        return
    tally.highlighted += 1
    if len(tally.highlights) < HIGHLIGHTS_SHOWN:
        tally.highlights.append({
            "index": index, "line": index - job.begin + 1, "at": rfc3339(at), "kind": kind,
            "system": system or "", "correlation_id": correlation_id or "",
        })  # fmt: skip


def _summary_context(
    job: ExportJob, tally: Tally, first: Checkpoint, last: Checkpoint, fingerprint: str,
    exported_at: datetime,
) -> dict[str, Any]:  # fmt: skip
    return {
        "job": job, "tally": tally, "kinds": sorted(tally.kinds.items()),
        "first": first, "last": last, "latest": job.checkpoint,
        "root": _b64(bytes(job.checkpoint.root)), "fingerprint": fingerprint,
        "exported_at": rfc3339(exported_at), "first_at": rfc3339(tally.first_at) if tally.first_at else "",
        "last_at": rfc3339(tally.last_at) if tally.last_at else "",
        "since": rfc3339(job.since) if job.since else "", "until": rfc3339(job.until) if job.until else "",
        "prior_size": _size_of(job.prior_checkpoint) if job.prior_checkpoint else None,
        "more": tally.highlighted - len(tally.highlights),
    }  # fmt: skip


def _manifest(job: ExportJob, digests: dict[str, str], exported_at: datetime) -> dict[str, Any]:
    return {
        "format": "tideline-ledger-bundle",
        "version": 1,
        "exported_at": rfc3339(exported_at),
        "exported_by": job.requested_by_name,
        "range": {"begin": job.begin, "end": job.end, "tree_size": job.checkpoint.size},
        "filters": {
            "since": rfc3339(job.since) if job.since else None,
            "until": rfc3339(job.until) if job.until else None,
            "system": job.system or None,
            "correlation_id": job.correlation_id or None,
        },
        "files": dict(sorted(digests.items())),
    }
