"""`ledger verify`: recompute the tree from the entries and hold every checkpoint against it.

Trusts nothing the database says about hashes: each leaf hash is recomputed from the
entry's bytes, each subtree from the leaves, and each checkpoint's signature is checked
with the configured public key. Stored leaf hashes and nodes serve only to name where a
change happened (the first entry or subtree that disagrees), and a checkpoint's root to
say which checkpoint a rewritten history contradicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from tracing.ledger import merkle
from tracing.ledger.models import Checkpoint
from tracing.ledger.note import NoteError, VerifierKey, checkpoint_body_parse, note_verify
from tracing.ledger.selectors import piece_hashes

CHUNK = 20_000


class Mismatch(Exception):
    """The first thing that does not hold; the message names it."""


@dataclass
class Verified:
    ok: bool
    problem: str = ""
    from_size: int = 0
    size: int = 0
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)


def ledger_tree_verify(*, key: VerifierKey, start: Checkpoint | None = None) -> Verified:
    """Verify from `start` (a checkpoint an earlier run verified) or from the first entry."""
    result = Verified(ok=False, from_size=start.size if start else 0)
    outermost = not connection.in_atomic_block
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if outermost:  # one snapshot: the sequencer may append while this runs
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _verify(cursor, key, start, result)
    except Mismatch as mismatch:
        result.problem = str(mismatch)
        return result
    result.ok = True
    return result


def _verify(cursor: Any, key: VerifierKey, start: Checkpoint | None, result: Verified) -> None:
    checkpoints = list(Checkpoint.objects.order_by("size", "id"))
    for checkpoint in checkpoints:
        _signature_check(checkpoint, key)
    compact = _compact_from(cursor, start)
    pending = [c for c in checkpoints if c.size >= compact.end]
    pending = _checkpoints_at(compact, pending, result)
    for begin, rows in _entry_chunks(cursor, compact.end):
        stored_nodes = _nodes_between(cursor, begin, begin + len(rows))
        for index, body, stored_leaf in rows:
            if index != compact.end:
                raise Mismatch(f"entry {compact.end} is missing (the next entry is {index})")
            leaf = hashlib.sha256(b"\x00" + body).digest()
            if leaf != stored_leaf:
                raise Mismatch(f"entry {index}: its bytes do not match its leaf hash (changed)")
            for level, node_index, digest in compact.append(leaf):
                if stored_nodes.get((level, node_index), digest) != digest:
                    first = node_index << level
                    raise Mismatch(
                        f"entry {first}..{first + (1 << level) - 1}: the entries no longer give "
                        f"the subtree the sequencer stored (changed, moved, added or removed)"
                    )
            if pending and pending[0].size == compact.end:
                pending = _checkpoints_at(compact, pending, result)
    if pending:
        raise Mismatch(
            f"checkpoint {pending[0].pk} (size {pending[0].size}): the log holds only "
            f"{compact.end} entries (entries were removed)"
        )
    result.size = compact.end


def _signature_check(checkpoint: Checkpoint, key: VerifierKey) -> None:
    try:
        body = checkpoint_body_parse(note_verify(checkpoint.note, key))
    except NoteError as error:
        raise Mismatch(f"checkpoint {checkpoint.pk} (size {checkpoint.size}): {error}") from None
    if (
        body.origin != key.name
        or body.size != checkpoint.size
        or body.root != bytes(checkpoint.root)
    ):
        raise Mismatch(
            f"checkpoint {checkpoint.pk} (size {checkpoint.size}): its signed note says "
            f"size {body.size} of {body.origin}, not what the table holds"
        )


def _compact_from(cursor: Any, start: Checkpoint | None) -> merkle.CompactRange:
    if start is None:
        return merkle.CompactRange()
    frontier = merkle.pieces(0, start.size)
    stored = piece_hashes(cursor, frontier)
    try:
        compact = merkle.CompactRange(start.size, [stored[piece] for piece in frontier])
    except KeyError:
        raise Mismatch(f"the subtrees under checkpoint {start.pk} are missing") from None
    # The stored right edge is trusted only because it rebuilds a root verified before.
    if compact.root() != bytes(start.root):
        raise Mismatch(
            f"checkpoint {start.pk} (size {start.size}): the stored subtrees no longer give "
            "the root an earlier verification saw (the tree was changed under it)"
        )
    return compact


def _checkpoints_at(
    compact: merkle.CompactRange, pending: list[Checkpoint], result: Verified
) -> list[Checkpoint]:
    root = compact.root()
    while pending and pending[0].size == compact.end:
        checkpoint = pending.pop(0)
        if bytes(checkpoint.root) != root:
            raise Mismatch(
                f"checkpoint {checkpoint.pk} (size {checkpoint.size}): the entries give another "
                "root (an entry up to it was changed, added, removed or moved)"
            )
        result.checkpoints += 1
        result.last_checkpoint = checkpoint
    return pending


def _entry_chunks(cursor: Any, begin: int) -> Iterator[tuple[int, list[tuple[int, bytes, bytes]]]]:
    while True:
        cursor.execute(
            "SELECT index, body, leaf_hash FROM ledger_entry WHERE index >= %s "
            "ORDER BY index LIMIT %s",
            [begin, CHUNK],
        )
        rows = [(index, bytes(body), bytes(leaf)) for index, body, leaf in cursor.fetchall()]
        if not rows:
            return
        yield begin, rows
        begin = rows[-1][0] + 1


def _nodes_between(cursor: Any, begin: int, end: int) -> dict[tuple[int, int], bytes]:
    """The stored subtrees that end within leaves [begin, end + gap)."""
    levels, lows, highs = [], [], []
    level = 1
    while (1 << level) <= end * 2:
        levels.append(level)
        lows.append(begin >> level)
        highs.append((end + CHUNK) >> level)
        level += 1
    cursor.execute(
        "SELECT n.level, n.index, n.hash FROM ledger_node n "
        "JOIN unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, lo, hi) "
        "ON n.level = r.level AND n.index BETWEEN r.lo AND r.hi",
        [levels, lows, highs],
    )
    return {(level, index): bytes(digest) for level, index, digest in cursor.fetchall()}
