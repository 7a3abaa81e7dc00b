"""Reads of the log: its size, subtree hashes, proofs and the data an export needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection

from tracing.ledger import merkle
from tracing.ledger.entries import ids_literal
from tracing.ledger.merkle import LeafRange, Piece
from tracing.ledger.models import Checkpoint, VerificationRun


def tree_size() -> int:
    with connection.cursor() as cursor:
        return tree_size_in(cursor)


def tree_size_in(cursor: Any) -> int:
    cursor.execute("SELECT index FROM ledger_entry ORDER BY index DESC LIMIT 1")
    row = cursor.fetchone()
    return int(row[0]) + 1 if row else 0


def piece_hashes(cursor: Any, wanted: Iterable[Piece]) -> dict[Piece, bytes]:
    """The hashes of aligned perfect subtrees: leaves from the entries, the rest from nodes.

    KeyError-free: a piece that is not stored is simply missing from the answer.
    """
    wanted = set(wanted)
    leaves = [index for level, index in wanted if level == 0]
    nodes = [(level, index) for level, index in wanted if level > 0]
    found: dict[Piece, bytes] = {}
    if leaves:
        cursor.execute("SELECT index, leaf_hash FROM ledger_entry WHERE index = ANY(%s)", [leaves])
        found.update({(0, index): bytes(digest) for index, digest in cursor.fetchall()})
    if nodes:
        cursor.execute(
            "SELECT n.level, n.index, n.hash FROM ledger_node n "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, index) "
            "ON n.level = w.level AND n.index = w.index",
            [[level for level, _ in nodes], [index for _, index in nodes]],
        )
        found.update({(level, index): bytes(digest) for level, index, digest in cursor.fetchall()})
    return found


class MissingNode(LookupError):
    """A subtree the log should hold is not stored: the tables were changed behind its back."""


def _lookup(cursor: Any, ranges: Iterable[LeafRange]) -> merkle.Lookup:
    found = piece_hashes(cursor, merkle.pieces_needed(ranges))

    def lookup(piece: Piece) -> bytes:
        try:
            return found[piece]
        except KeyError:
            raise MissingNode(f"subtree {piece} is not stored") from None

    return lookup


def root_at(size: int) -> bytes:
    with connection.cursor() as cursor:
        return root_at_in(cursor, size)


def root_at_in(cursor: Any, size: int) -> bytes:
    prefix = [(0, size)] if size else []
    return merkle.range_hash((0, size), _lookup(cursor, prefix)) if size else merkle.EMPTY_ROOT


@dataclass(frozen=True)
class Inclusion:
    tree_size: int  # the log's size now
    entry: tuple[bytes, bytes] | None  # (canonical bytes, leaf hash) at the index asked
    path: list[bytes] | None  # PATH(index, D[size]); None when index or size is out of range


# The log's size, the entry and every subtree the proof needs: one statement (the API's hot
# path: a round trip costs more than the reading), one snapshot.
INCLUSION_SQL = """
SELECT -2, (SELECT index FROM ledger_entry ORDER BY index DESC LIMIT 1), NULL, NULL
UNION ALL
SELECT -1, index, body, leaf_hash FROM ledger_entry WHERE index = %s
UNION ALL
SELECT 0, index, NULL, leaf_hash FROM ledger_entry WHERE index = ANY(%s::bigint[])
UNION ALL
SELECT n.level, n.index, NULL, n.hash FROM ledger_node n
JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, index)
ON n.level = w.level AND n.index = w.index
"""


def inclusion_at(index: int, size: int) -> Inclusion:
    """The entry at `index` and its inclusion proof in the tree of `size`, if the log holds
    that tree. MissingNode when a subtree the log should hold is not stored."""
    ranges = merkle.inclusion_ranges(index, size) if 0 <= index < size else []
    wanted = merkle.pieces_needed(ranges)
    leaves = [i for level, i in wanted if level == 0]
    nodes = [(level, i) for level, i in wanted if level > 0]
    with connection.cursor() as cursor:
        cursor.execute(
            INCLUSION_SQL,
            [
                index,
                ids_literal(leaves),
                ids_literal(lv for lv, _ in nodes),
                ids_literal(i for _, i in nodes),
            ],
        )
        rows = cursor.fetchall()
    last, entry, found = -1, None, {}
    for level, position, body, digest in rows:
        if level == -2:
            last = -1 if position is None else position
        elif level == -1:
            entry = (bytes(body), bytes(digest))
        else:
            found[(level, position)] = bytes(digest)
    if not 0 <= index < size or size > last + 1:  # a one-entry tree's proof is empty: valid
        return Inclusion(last + 1, entry, None)

    def lookup(piece: Piece) -> bytes:
        try:
            return found[piece]
        except KeyError:
            raise MissingNode(f"subtree {piece} is not stored") from None

    return Inclusion(last + 1, entry, [merkle.range_hash(leaves, lookup) for leaves in ranges])


def consistency_proof(first: int, second: int) -> list[bytes]:
    ranges = merkle.consistency_ranges(first, second)
    with connection.cursor() as cursor:
        lookup = _lookup(cursor, ranges)
    return [merkle.range_hash(leaves, lookup) for leaves in ranges]


def range_proof(begin: int, end: int, size: int) -> dict[str, Any]:
    """The contract's range proof of entries [begin, end) against the tree of `size`."""
    left, right = merkle.range_proof_pieces(begin, end, size)
    with connection.cursor() as cursor:
        found = piece_hashes(cursor, [*left, *right])
    try:
        return {
            "begin": begin, "end": end, "size": size,
            "left": [found[piece] for piece in left], "right": [found[piece] for piece in right],
        }  # fmt: skip
    except KeyError as missing:
        raise MissingNode(f"subtree {missing} is not stored") from None


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-size", "-id").first()


def checkpoint_covering(size: int) -> Checkpoint | None:
    """The first checkpoint whose tree holds `size` entries (for a bundle's first/last)."""
    return Checkpoint.objects.filter(size__gte=size).order_by("size", "id").first()


def verification_failed() -> VerificationRun | None:
    """The latest finished verification, when it failed: the dashboard shows it to everyone."""
    latest = VerificationRun.objects.filter(ok__isnull=False).order_by("-id").first()
    return latest if latest is not None and latest.ok is False else None
