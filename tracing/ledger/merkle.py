"""The Merkle tree of RFC 9162 section 2.1: hashes, proofs, their verification, range proofs.

Pure functions over hashes; storage stays outside. A proof is generated in two steps so
that the database is read once: the proof's *ranges* of leaves are computed first, each
range is split into aligned perfect subtrees ("pieces", stored by the sequencer as
(level, index) nodes), and the hashes are then folded from those pieces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

Piece = tuple[
    int, int
]  # (level, index): the subtree of leaves [index * 2^level, (index+1) * 2^level)
LeafRange = tuple[int, int]  # [begin, end)
Lookup = Callable[[Piece], bytes]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than size (size > 1), where RFC 9162 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


# --- pieces: aligned perfect subtrees ----------------------------------------------------


def pieces(begin: int, end: int) -> list[Piece]:
    """The maximal aligned perfect subtrees covering [begin, end), left to right.

    Greedy from `begin`: the largest 2^k with begin % 2^k == 0 and begin + 2^k <= end.
    """
    found = []
    position = begin
    while position < end:
        level = (position & -position).bit_length() - 1 if position else (end - 1).bit_length()
        while position + (1 << level) > end:
            level -= 1
        found.append((level, position >> level))
        position += 1 << level
    return found


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of consecutive pieces whose sizes fall left to right, folded right to left."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def range_hash(leaves: LeafRange, lookup: Lookup) -> bytes:
    """MTH of the leaves [begin, end), for a range that is a node of an RFC 9162 tree
    (its begin aligned to a power of two at least its size) or a prefix [0, end)."""
    return fold([lookup(piece) for piece in pieces(*leaves)])


def pieces_needed(ranges: Iterable[LeafRange]) -> set[Piece]:
    return {piece for leaves in ranges for piece in pieces(*leaves)}


# --- inclusion (RFC 9162 2.1.3) ------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[LeafRange]:
    """The subtrees whose hashes form PATH(index, D[size]), bottom-up."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is not in a tree of size {size}")
    path: list[LeafRange] = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index < begin + k:
            path.append((begin + k, end))
            end = begin + k
        else:
            path.append((begin, begin + k))
            begin += k
    path.reverse()
    return path


def inclusion_proof(index: int, size: int, lookup: Lookup) -> list[bytes]:
    return [range_hash(leaves, lookup) for leaves in inclusion_ranges(index, size)]


def inclusion_verify(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: whether `leaf` (a leaf hash) is at `index` in the tree `root`."""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


# --- consistency (RFC 9162 2.1.4) ----------------------------------------------------------


def consistency_ranges(first: int, second: int) -> list[LeafRange]:
    """The subtrees whose hashes form PROOF(first, D[second]), bottom-up; empty when equal."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    proof: list[LeafRange] = []
    begin, end, whole = 0, second, True
    while end != first:
        k = _split(end - begin)
        if first - begin <= k:
            proof.append((begin + k, end))
            end = begin + k
        else:
            proof.append((begin, begin + k))
            begin, whole = begin + k, False
    if not whole:
        proof.append((begin, end))
    proof.reverse()
    return proof


def consistency_proof(first: int, second: int, lookup: Lookup) -> list[bytes]:
    return [range_hash(leaves, lookup) for leaves in consistency_ranges(first, second)]


def consistency_verify(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: whether the tree `second_root` extends the tree `first_root`."""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path and first_root == EMPTY_ROOT
    if not path:
        return False
    hashes = list(path)
    if first & (first - 1) == 0:
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first_result = second_result = hashes[0]
    for sibling in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_result = node_hash(sibling, first_result)
            second_result = node_hash(sibling, second_result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second_result = node_hash(second_result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first_result == first_root and second_result == second_root


# --- compact ranges and range proofs -----------------------------------------------------


class CompactRange:
    """The right edge of a tree growing from `begin`: one hash per aligned perfect subtree.

    `append` returns every aligned perfect subtree it completes, which the sequencer stores
    as nodes so that proofs need only O(log n) rows.
    """

    def __init__(self, begin: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [level for level, _ in pieces(0, begin)]
        if len(hashes) != len(levels):
            raise ValueError(f"a compact range of {begin} leaves needs {len(levels)} hashes")
        self.end = begin
        self.stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    @classmethod
    def starting_at(cls, size: int, lookup: Lookup) -> CompactRange:
        return cls(size, [lookup(piece) for piece in pieces(0, size)])

    def append(self, digest: bytes, level: int = 0) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash (level 0) or an aligned subtree of 2^level leaves; returns the
        (level, index, hash) of each larger subtree this completes."""
        if self.end % (1 << level) or (self.stack and self.stack[-1][0] < level):
            raise ValueError(f"a subtree of 2^{level} leaves cannot follow at {self.end}")
        position = self.end
        self.end += 1 << level
        completed = []
        while self.stack and self.stack[-1][0] == level:
            digest, level = node_hash(self.stack.pop()[1], digest), level + 1
            completed.append((level, position >> level, digest))
        self.stack.append((level, digest))
        return completed

    def root(self) -> bytes:
        return fold([digest for _, digest in self.stack])

    def hashes(self) -> list[bytes]:
        return [digest for _, digest in self.stack]


def range_proof_pieces(begin: int, end: int, size: int) -> tuple[list[Piece], list[Piece]]:
    """The `left` and `right` subtrees of the contract's range proof of [begin, end) in size."""
    if not 0 <= begin <= end <= size:
        raise ValueError(f"[{begin}, {end}) is not a range of a tree of size {size}")
    return pieces(0, begin), pieces(end, size)


def range_verify(
    leaves: Iterable[bytes],
    *,
    begin: int,
    size: int,
    left: Sequence[bytes],
    right: Sequence[bytes],
    root: bytes,
) -> bool:
    """Whether the leaf hashes of [begin, end), rebuilt with the proof, give `root` at `size`."""
    try:
        compact = CompactRange(begin, left)
        for leaf in leaves:
            compact.append(leaf)
        right_pieces = pieces(compact.end, size)
        if len(right_pieces) != len(right):
            return False
        for (level, _), digest in zip(right_pieces, right, strict=True):
            compact.append(digest, level)
    except ValueError:
        return False
    return compact.end == size and compact.root() == root
