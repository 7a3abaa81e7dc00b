"""verify.py's building blocks against the standards: RFC 8032, RFC 8785 and RFC 9162.

verify.py is loaded from its file (it is a standalone script, not part of a package) and its
answers are compared with published vectors and with the test bundle writer's proofs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.tracing.ledger import bundlekit

VECTORS = json.loads((Path(__file__).parent / "vectors" / "ed25519_rfc8032.json").read_text())


def _load_verify() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_verify_py", bundlekit.VERIFY_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


verify = _load_verify()


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_it_accepts_every_rfc8032_signature(vector: dict[str, str]) -> None:
    public_key, message, signature = (
        bytes.fromhex(vector[name]) for name in ("public_key", "message", "signature")
    )
    assert verify.ed25519_verify(public_key, message, signature)
    assert not verify.ed25519_verify(public_key, message + b"!", signature)
    for position in (0, 31, 32, 63):
        flipped = bytearray(signature)
        flipped[position] ^= 0x01
        assert not verify.ed25519_verify(public_key, message, bytes(flipped))


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_the_test_signer_reproduces_every_rfc8032_signature(vector: dict[str, str]) -> None:
    seed, message = bytes.fromhex(vector["secret_key"]), bytes.fromhex(vector["message"])
    assert bundlekit.ed25519_public_key(seed).hex() == vector["public_key"]
    assert bundlekit.ed25519_sign(seed, message).hex() == vector["signature"]


def test_it_rejects_a_signature_whose_s_is_not_reduced() -> None:
    # S + L verifies the same equation; RFC 8032 (and Go) refuse it as malleable.
    vector = VECTORS["vectors"][0]
    public_key, signature = bytes.fromhex(vector["public_key"]), bytes.fromhex(vector["signature"])
    s = int.from_bytes(signature[32:], "little") + verify._L
    assert not verify.ed25519_verify(public_key, b"", signature[:32] + s.to_bytes(32, "little"))


def test_the_base_point_is_rfc8032s() -> None:
    p, x, y = verify._P, verify._BASE_X, verify._BASE_Y
    assert y == 4 * pow(5, p - 2, p) % p
    assert (-x * x + y * y - 1 - verify._D * x * x * y * y) % p == 0
    assert x % 2 == 0


@pytest.mark.parametrize(
    "line",
    [
        b'{"a":1,"b":[true,false,null],"c":{"d":"e"}}',
        '{"actor":"Bjørn Ødegård","v":1}'.encode(),
        b'{"text":"tab\\t quote\\" slash\\\\ unit\\u001f del\x7f"}',
        # U+1F600 is a surrogate pair in UTF-16, so it sorts before U+E000.
        '{"\U0001f600":1,"\ue000":2}'.encode(),
        '{"a":"\ue000","b":"\U0001f600"}'.encode(),
        b'{"big":9007199254740991,"neg":-5,"zero":0}',
    ],
)
def test_it_accepts_canonical_entries(line: bytes) -> None:
    verify.check_canonical(line)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b'{"a":1, "b":2}', "canonical form"),
        (b'{"b":1,"a":2}', "canonical form"),
        (b'{"\xee\x80\x80":2,"\xf0\x9f\x98\x80":1}', "canonical form"),
        ('{"b":"\U0001f600","a":1}'.encode(), "canonical form"),
        (b'{"a":"\\u00e9"}', "canonical form"),
        (b'{"a":"\\u001F"}', "canonical form"),
        (b'{"a":"\\/"}', "canonical form"),
        (b'{"amount":1.5}', "not an integer"),
        (b'{"amount":1e3}', "not an integer"),
        (b'{"amount":NaN}', "not an integer"),
        (b'{"amount":-0}', "canonical form"),
        (b'{"big":9007199254740992}', "beyond 2\\^53"),
        (b'{"a":1,"a":1}', "same key twice"),
        (b'{"a":"\\ud800"}', "Unicode"),
        (b'{"a":"\xff"}', "UTF-8"),
        (b"[1,2]", "JSON object"),
        (b'{"a":1}\r', "canonical form"),
    ],
)
def test_it_refuses_entries_that_are_not_canonical(line: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        verify.check_canonical(line)


def test_the_test_writer_and_verify_py_agree_on_canonical_form() -> None:
    for entry in bundlekit.sample_entries(20):
        verify.check_canonical(entry)
        assert verify.canonical(json.loads(entry)).encode() == entry


def test_the_empty_tree_has_rfc9162s_root() -> None:
    assert verify.CompactRange().root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_it_verifies_every_inclusion_proof_and_refuses_a_wrong_one() -> None:
    tree = bundlekit.Tree(bundlekit.sample_entries(33))
    for size in range(1, 34):
        root = tree.root(size)
        for index in range(size):
            path = tree.inclusion(index, size)
            assert verify.verify_inclusion(index, size, tree.leaves[index], path, root)
            other = tree.leaves[(index + 1) % len(tree.leaves)]
            assert not verify.verify_inclusion(index, size, other, path, root)
            if path:
                assert not verify.verify_inclusion(index, size, tree.leaves[index], path[:-1], root)
        assert not verify.verify_inclusion(size, size, tree.leaves[0], [], root)


def test_it_verifies_every_consistency_proof_and_refuses_a_wrong_one() -> None:
    tree = bundlekit.Tree(bundlekit.sample_entries(33))
    for second in range(0, 34):
        for first in range(0, second + 1):
            path = tree.consistency(first, second)
            roots = tree.root(first), tree.root(second)
            assert verify.verify_consistency(first, second, *roots, path), (first, second)
            if 0 < first < second:
                wrong = tree.root(first - 1) if first > 1 else tree.leaves[1]
                assert not verify.verify_consistency(first, second, wrong, roots[1], path)
                assert not verify.verify_consistency(first, second, *roots, path[1:])
                assert not verify.verify_consistency(
                    first, second, roots[0], tree.root(second - 1), path
                )


def test_every_range_proof_rebuilds_the_root() -> None:
    entries = bundlekit.sample_entries(18)
    tree = bundlekit.Tree(entries)
    for size in range(0, 19):
        for begin in range(0, size + 1):
            for end in range(begin, size + 1):
                proof = tree.range_proof(begin, end, size)
                compact = verify.CompactRange()
                compact.extend(
                    [verify.b64hash(h, "", "") for h in proof["left"]], verify.left_sizes(begin)
                )
                for entry in entries[begin:end]:
                    compact.append(verify.leaf_hash(entry))
                compact.extend(
                    [verify.b64hash(h, "", "") for h in proof["right"]],
                    verify.right_sizes(end, size),
                )
                assert compact.root() == tree.root(size), (begin, end, size)
