"""Changes to the ledger: sequencing the queue into the tree, signing checkpoints, witnessing.

The sequencer is the only writer of entries and nodes. It runs one at a time (a PostgreSQL
advisory lock, held for its transaction) and appends a batch in one transaction: the entries,
every subtree they complete, and the deletion of their queue rows — all or nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tracing.ledger import copy_rows, merkle
from tracing.ledger.entries import PENDING_SQL, BuiltEntry, ids_literal
from tracing.ledger.entries_beside import entry_chunks
from tracing.ledger.models import Checkpoint, Kind, VerificationRun, WitnessPublication
from tracing.ledger.note import VerifierKey, checkpoint_body, verifier_key_parse
from tracing.ledger.selectors import piece_hashes, root_at_in, tree_size_in
from tracing.ledger.signing import signing_key
from tracing.ledger.verification import ledger_tree_verify

logger = logging.getLogger(__name__)

SEQUENCER_LOCK = 0x7D1E_1ED6  # pg advisory lock key: "tideline ledger"
ENTRY_COLUMNS = (
    "index", "body", "leaf_hash", "kind", "source_id", "at", "system", "correlation_id",
    "sequenced_at",
)  # fmt: skip


@dataclass(frozen=True)
class Sequenced:
    entries: int
    size: int


def ledger_sequence(*, now: datetime, batch: int | None = None, batches: int = 50) -> Sequenced:
    """Append what the queue holds, a batch per transaction, until it is empty."""
    total, size = 0, -1
    for _ in range(batches):
        appended, size = _sequence_batch(now=now, limit=batch or settings.TIDELINE_LEDGER_BATCH)
        if appended is None:
            break
        total += appended
    return Sequenced(entries=total, size=size)


def _sequence_batch(*, now: datetime, limit: int) -> tuple[int | None, int]:
    """(entries appended, tree size); None when another sequencer runs or the queue is empty."""
    beside = not connection.in_atomic_block  # see entries_beside
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
        if not cursor.fetchone()[0]:
            return None, -1
        cursor.execute(PENDING_SQL, [limit])
        pending = cursor.fetchall()
        size = tree_size_in(cursor)
        if not pending:
            return None, size
        frontier = merkle.pieces(0, size)
        stored = piece_hashes(cursor, frontier)
        compact = merkle.CompactRange(size, [stored[piece] for piece in frontier])

        def queue_emptied() -> None:  # in this transaction: undone if the batch fails
            cursor.execute(
                "DELETE FROM ledger_pendingentry WHERE id = ANY(%s::bigint[])",
                [ids_literal(row[0] for row in pending)],
            )

        chunks = entry_chunks(cursor, pending, beside=beside, meanwhile=queue_emptied)
        nodes = _entries_append(cursor, compact, chunks, now=now)
        appended = compact.end - size
        if appended < len(pending):
            logger.warning(
                "ledger: %d queued rows no longer exist and get no entry", len(pending) - appended
            )
        _nodes_append(cursor, nodes)
    return appended, size + appended


def _entries_append(
    cursor: Any,
    compact: merkle.CompactRange,
    chunks: Generator[list[BuiltEntry], None, None],
    *,
    now: datetime,
) -> list[tuple[int, int, bytes]]:
    """COPY the entries while they are encoded and hashed, so that PostgreSQL stores and
    indexes one part while Python makes the next; returns the subtrees they complete.
    The chunks are taken before COPY begins, so that one built on this connection is."""
    nodes: list[tuple[int, int, bytes]] = []
    append, sha256, parse = compact.append, hashlib.sha256, datetime.fromisoformat
    kinds = {kind: copy_rows.text(kind) for kind in Kind.values}
    sequenced_at = copy_rows.timestamp(now)
    first = next(chunks, [])
    statement = f"COPY ledger_entry ({', '.join(ENTRY_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with closing(chunks), cursor.cursor.copy(statement) as copy:
        copy.write(copy_rows.SIGNATURE)
        for chunk in itertools.chain([first], chunks):
            rows = bytearray()
            for entry in chunk:
                body = entry.body
                leaf = sha256(b"\x00" + body).digest()  # merkle.leaf_hash, inlined: the hot loop
                rows += copy_rows.entry_row(
                    compact.end, body, leaf, kinds[entry.kind], entry.source_id,
                    parse(entry.at), entry.system, entry.correlation_id, sequenced_at,
                )  # fmt: skip
                nodes.extend(append(leaf))
            copy.write(rows)
        copy.write(copy_rows.TRAILER)
    return nodes


def _nodes_append(cursor: Any, nodes: list[tuple[int, int, bytes]]) -> None:
    with cursor.cursor.copy(
        "COPY ledger_node (level, index, hash) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        node_row = copy_rows.node_row
        copy.write(
            b"".join([copy_rows.SIGNATURE, *(node_row(*node) for node in nodes), copy_rows.TRAILER])
        )


def ledger_checkpoint(*, now: datetime, force: bool = False) -> Checkpoint | None:
    """Sign the tree as it is now, if it grew since the last checkpoint (or none exists)."""
    key = signing_key()
    with transaction.atomic(), connection.cursor() as cursor:
        # Under the sequencer's lock, so size and root describe the same tree.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])
        size = tree_size_in(cursor)
        last = Checkpoint.objects.order_by("-size", "-id").first()
        if last is not None and last.size >= size and not force:
            return None
        root = root_at_in(cursor, size)
        body = checkpoint_body(key.name, size, root, now).text()
        checkpoint = Checkpoint.objects.create(
            size=size, root=root, note=key.sign(body), key_fingerprint=key.fingerprint,
            created_at=now,
        )  # fmt: skip
        for target in witness_targets():
            WitnessPublication.objects.create(checkpoint=checkpoint, target=target)
    return checkpoint


WITNESS_LOCK = "tideline.ledger.witness"
# A witness that does not answer a connection within 3 s is down for this run.
WITNESS_TIMEOUT = httpx.Timeout(10, connect=3)


def witness_targets() -> list[str]:
    return [
        target
        for target in (settings.TIDELINE_WITNESS_URL, settings.TIDELINE_WITNESS_DIR)
        if target
    ]


def witness_publish(*, now: datetime) -> int:
    """Send every checkpoint not yet published to its witness target; returns how many went.

    Outside any transaction: a slow webhook must not hold a database lock. One publisher at
    a time (beat starts one every 30 s; a slow target must not make them pile up and keep
    every worker busy), and a target that fails is not tried again in the same run.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [WITNESS_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        try:
            return _witness_publish_waiting(now)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [WITNESS_LOCK])


def _witness_publish_waiting(now: datetime) -> int:
    published, down = 0, set()
    waiting = (
        WitnessPublication.objects.select_related("checkpoint")
        .exclude(status=WitnessPublication.Status.PUBLISHED)
        .filter(attempts__lt=20)
        .order_by("id")[:100]
    )
    for publication in waiting:
        if publication.target in down:
            continue
        try:
            _publish(publication.target, publication.checkpoint)
        except (OSError, httpx.HTTPError) as error:
            down.add(publication.target)
            WitnessPublication.objects.filter(pk=publication.pk).update(
                status=WitnessPublication.Status.FAILED, attempts=publication.attempts + 1,
                error=str(error)[:500],
            )  # fmt: skip
            continue
        WitnessPublication.objects.filter(pk=publication.pk).update(
            status=WitnessPublication.Status.PUBLISHED, attempts=publication.attempts + 1,
            error="", published_at=now,
        )  # fmt: skip
        published += 1
    return published


def _publish(target: str, checkpoint: Checkpoint) -> None:
    if target.startswith(("http://", "https://")):
        response = httpx.post(
            target, content=checkpoint.note.encode(), timeout=WITNESS_TIMEOUT,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )  # fmt: skip
        response.raise_for_status()
        return
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{checkpoint.size:012d}-{checkpoint.pk}.txt"
    partial = directory / f".{name}.partial"
    partial.write_text(checkpoint.note, encoding="utf-8")
    partial.replace(directory / name)  # whole or not at all, for the collecting system


def ledger_verify(
    *, now: datetime, full: bool = False, key: VerifierKey | None = None
) -> VerificationRun:
    """Verify the log and record the run; incremental from the last verified checkpoint
    unless `full`. The dashboard shows the latest run that failed."""
    key = key or verifier_key_parse(signing_key().verifier_key)
    last = None if full else VerificationRun.objects.filter(ok=True).order_by("-id").first()
    run = VerificationRun.objects.create(started_at=now)
    start = last.verified_checkpoint if last else None
    result = ledger_tree_verify(key=key, start=start)
    run.finished_at = timezone.now()
    run.ok = result.ok
    run.problem = result.problem
    run.from_size = result.from_size
    run.verified_size = result.size
    run.checkpoints = result.checkpoints
    run.entries = max(result.size - result.from_size, 0)
    run.verified_checkpoint = result.last_checkpoint or start
    run.save()
    return run
