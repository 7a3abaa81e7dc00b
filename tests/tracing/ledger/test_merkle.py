"""The Merkle tree against RFC 9162's definitions computed the slow, obvious way."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tracing.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    consistency_verify,
    inclusion_proof,
    inclusion_verify,
    leaf_hash,
    node_hash,
    range_proof_pieces,
    range_verify,
)

LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(65)]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, word for word (over leaf hashes)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def lookup_in(leaves: list[bytes]):
    def lookup(piece: tuple[int, int]) -> bytes:
        level, index = piece
        return mth(leaves[index << level : (index + 1) << level])

    return lookup


LOOKUP = lookup_in(LEAVES)


def test_the_empty_tree_hashes_the_empty_string():
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_leaf_and_node_hashes_carry_their_domain_prefix():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    # RFC 6962's test vector: the leaf hash of the empty entry.
    assert (
        leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_compact_range_roots_match_the_definition_for_every_size_up_to_64():
    compact = CompactRange()
    stored = {}
    for size in range(1, 65):
        for level, index, digest in compact.append(LEAVES[size - 1]):
            stored[level, index] = digest
        assert compact.root() == mth(LEAVES[:size])
    # Every completed subtree is the aligned perfect subtree it claims to be.
    assert all(digest == LOOKUP(piece) for piece, digest in stored.items())
    assert len(stored) == 63


def test_a_compact_range_resumes_from_stored_subtrees():
    for size in range(65):
        resumed = CompactRange.starting_at(size, LOOKUP)
        for leaf in LEAVES[size:]:
            resumed.append(leaf)
        assert resumed.root() == mth(LEAVES)


@pytest.mark.parametrize("size", range(1, 65))
def test_inclusion_proofs_are_rfc_paths_and_verify(size):
    leaves = LEAVES[:size]
    root = mth(leaves)
    for index in range(size):
        proof = inclusion_proof(index, size, LOOKUP)
        assert proof == path(index, leaves)
        assert inclusion_verify(leaves[index], index, size, proof, root)
        assert not inclusion_verify(LEAVES[64], index, size, proof, root)
        if proof:
            bent = [*proof[:-1], node_hash(proof[-1], proof[-1])]
            assert not inclusion_verify(leaves[index], index, size, bent, root)


@pytest.mark.parametrize("second", range(1, 65))
def test_consistency_proofs_are_rfc_subproofs_and_verify(second):
    second_root = mth(LEAVES[:second])
    for first in range(1, second + 1):
        proof = consistency_proof(first, second, LOOKUP)
        assert proof == subproof(first, LEAVES[:second], True)
        first_root = mth(LEAVES[:first])
        assert consistency_verify(first, second, first_root, second_root, proof)
        assert not consistency_verify(first, second, LEAVES[64], second_root, proof)
        assert not consistency_verify(first, second, first_root, LEAVES[64], proof)
        if proof:
            assert not consistency_verify(first, second, first_root, second_root, proof[:-1])


def test_a_rewritten_history_has_no_consistency_proof():
    rewritten = [*LEAVES[:10], leaf_hash(b"forged"), *LEAVES[11:40]]
    proof = consistency_proof(20, 40, lookup_in(rewritten))
    assert not consistency_verify(20, 40, mth(LEAVES[:20]), mth(rewritten), proof)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 13, 32, 33, 64])
def test_range_proofs_rebuild_the_root_from_a_contiguous_range(size):
    root = mth(LEAVES[:size])
    for begin in range(size + 1):
        for end in range(begin, size + 1):
            left, right = range_proof_pieces(begin, end, size)
            left_hashes, right_hashes = [LOOKUP(p) for p in left], [LOOKUP(p) for p in right]
            ok = range_verify(
                LEAVES[begin:end],
                begin=begin,
                size=size,
                left=left_hashes,
                right=right_hashes,
                root=root,
            )
            assert ok, (begin, end)
            if end > begin:
                assert not range_verify(
                    LEAVES[begin : end - 1],
                    begin=begin,
                    size=size,
                    left=left_hashes,
                    right=right_hashes,
                    root=root,
                )
                changed = [LEAVES[64], *LEAVES[begin + 1 : end]]
                assert not range_verify(
                    changed, begin=begin, size=size, left=left_hashes, right=right_hashes, root=root
                )


def test_range_proof_subtree_sizes_follow_the_contract():
    left, right = range_proof_pieces(5, 9, 16)
    assert left == [(2, 0), (0, 4)]  # 4 + 1 leaves before 5
    assert right == [(0, 9), (1, 5), (2, 3)]  # 9, 10-11, 12-15
    assert base64.b64encode(LOOKUP((2, 0))).decode().endswith("=")
