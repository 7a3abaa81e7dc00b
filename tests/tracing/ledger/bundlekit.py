"""A small writer of ledger export bundles for verify.py's tests.

Built from the ledger contract's definitions alone (not from verify.py, not from the server's
code), so that verify.py is checked against an independent reading of the same standards.
Ed25519 signing is RFC 8032 section 5.1.6 in projective coordinates, sharing no arithmetic
with verify.py's verifier (which uses extended coordinates).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERIFY_PY = Path(__file__).resolve().parents[3] / "tracing" / "ledger" / "verify.py"
ORIGIN = "tideline.example/tideline/7f3c2a"

# ---------------------------------------------------------------- Ed25519 signing

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_BASE = (
    15112221349535400772501151409588531511454012693041857206046113283949847762202,
    46316835694926478169428394003475163141307993866256225615783033603165251855960,
)


def _add(p: tuple[int, int, int], q: tuple[int, int, int]) -> tuple[int, int, int]:
    # Projective twisted Edwards addition with a = -1 (Bernstein-Lange add-2007-bl).
    (x1, y1, z1), (x2, y2, z2) = p, q
    a = z1 * z2 % _P
    b = a * a % _P
    c = x1 * x2 % _P
    d = y1 * y2 % _P
    e = _D * c * d % _P
    f, g = b - e, b + e
    return (
        a * f * ((x1 + y1) * (x2 + y2) - c - d) % _P,
        a * g * (d + c) % _P,
        f * g % _P,
    )


def _multiply(scalar: int, point: tuple[int, int]) -> tuple[int, int]:
    result, addend = (0, 1, 1), (point[0], point[1], 1)
    while scalar:
        if scalar & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        scalar >>= 1
    z_inverse = pow(result[2], _P - 2, _P)
    return result[0] * z_inverse % _P, result[1] * z_inverse % _P


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _expand(seed: bytes) -> tuple[int, bytes]:
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return scalar, digest[32:]


def ed25519_public_key(seed: bytes) -> bytes:
    return _encode(_multiply(_expand(seed)[0], _BASE))


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    scalar, prefix = _expand(seed)
    public = _encode(_multiply(scalar, _BASE))
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % _L
    big_r = _encode(_multiply(r, _BASE))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % _L
    return big_r + ((r + k * scalar) % _L).to_bytes(32, "little")


# ---------------------------------------------------------------- canonical entries


def canonical(value: object) -> bytes:
    """RFC 8785 for values without floats: keys in UTF-16 order, no whitespace, UTF-8."""

    def ordered(item: object) -> object:
        if isinstance(item, dict):
            keys = sorted(item, key=lambda key: key.encode("utf-16-be"))
            return {key: ordered(item[key]) for key in keys}
        if isinstance(item, list):
            return [ordered(x) for x in item]
        assert not isinstance(item, float)
        return item

    return json.dumps(ordered(value), ensure_ascii=False, separators=(",", ":")).encode()


def sample_entry(index: int) -> dict[str, object]:
    """A record entry from the seafood company's order-to-invoice flow."""
    order = f"ORD-{4711 + index // 6}"
    step = ("order_created", "stock_reserved", "production_notified")[index % 3]
    return {
        "v": 1,
        "kind": "record",
        "id": str(100000 + index),
        "at": f"2025-03-07T{8 + index // 3600 % 12:02d}:{index // 60 % 60:02d}:{index % 60:02d}.{index % 1000000:06d}Z",
        "actor": "harbour-runtime",
        "action": step,
        "system": ("ERP", "WMS", "MES")[index % 3],
        "correlation_id": order,
        "message_id": f"msg-{index:08d}",
        "digests": {
            "payload": "sha256:" + hashlib.sha256(f"payload {index}".encode()).hexdigest(),
            "request": "sha256:" + hashlib.sha256(f"request {index}".encode()).hexdigest(),
        },
    }


def sample_entries(count: int) -> list[bytes]:
    return [canonical(sample_entry(i)) for i in range(count)]


# ---------------------------------------------------------------- Merkle tree (RFC 9162)


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (RFC 9162's k)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """The RFC 9162 tree over `entries`, with the proofs a server hands out."""

    def __init__(self, entries: list[bytes]) -> None:
        self.leaves = [leaf_hash(entry) for entry in entries]
        self._cache: dict[tuple[int, int], bytes] = {}

    def hash(self, begin: int, end: int) -> bytes:
        """MTH of the leaves [begin, end)."""
        if end == begin:
            return hashlib.sha256(b"").digest()
        if end - begin == 1:
            return self.leaves[begin]
        if (begin, end) not in self._cache:
            k = _split(end - begin)
            self._cache[begin, end] = node_hash(
                self.hash(begin, begin + k), self.hash(begin + k, end)
            )
        return self._cache[begin, end]

    def root(self, size: int) -> bytes:
        return self.hash(0, size)

    def inclusion(self, index: int, size: int, offset: int = 0) -> list[bytes]:
        """RFC 9162 2.1.3.1 PATH(index, D[offset:offset+size])."""
        if size <= 1:
            return []
        k = _split(size)
        if index < k:
            return [*self.inclusion(index, k, offset), self.hash(offset + k, offset + size)]
        return [*self.inclusion(index - k, size - k, offset + k), self.hash(offset, offset + k)]

    def consistency(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 2.1.4.1 PROOF(first, D[second])."""
        if first in (0, second):
            return []
        return self._subproof(first, 0, second, True)

    def _subproof(self, m: int, begin: int, end: int, complete: bool) -> list[bytes]:
        n = end - begin
        if m == n:
            return [] if complete else [self.hash(begin, end)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, begin, begin + k, complete), self.hash(begin + k, end)]
        return [*self._subproof(m - k, begin + k, end, False), self.hash(begin, begin + k)]

    def range_proof(self, begin: int, end: int, size: int) -> dict[str, Any]:
        """The contract's range proof: perfect subtrees left of begin and right of end."""
        left, position = [], 0
        for bit in reversed(range(begin.bit_length())):
            if begin >> bit & 1:
                left.append(self.hash(position, position + (1 << bit)))
                position += 1 << bit
        right, position = [], end
        while position < size:
            leaves = position & -position if position else 1 << (size.bit_length() - 1)
            while position + leaves > size:
                leaves >>= 1
            right.append(self.hash(position, position + leaves))
            position += leaves
        return {
            "begin": begin,
            "end": end,
            "size": size,
            "left": [b64(h) for h in left],
            "right": [b64(h) for h in right],
        }


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---------------------------------------------------------------- keys and checkpoints


@dataclass
class Signer:
    """A checkpoint signer holding an Ed25519 seed, named after the log's origin."""

    seed: bytes
    name: str = ORIGIN
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.public_key = ed25519_public_key(self.seed)

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n\x01" + self.public_key).digest()[:4]

    @property
    def verifier_key(self) -> str:
        key = b64(b"\x01" + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{key}"

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + hashlib.sha256(b"\x01" + self.public_key).hexdigest()

    def checkpoint(self, size: int, root: bytes) -> bytes:
        """A signed C2SP tlog-checkpoint; the time extension grows with the size."""
        minutes = size // 1000
        time = f"2025-03-07T{8 + minutes // 60 % 12:02d}:{minutes % 60:02d}:00.000000Z"
        body = f"{self.name}\n{size}\n{b64(root)}\ntime {time}\n".encode()
        signature = b64(self.key_id + ed25519_sign(self.seed, body))
        return body + f"\n\u2014 {self.name} {signature}\n".encode()


REAL_KEY = Signer(hashlib.sha256(b"tideline test signing key").digest())
OTHER_KEY = Signer(hashlib.sha256(b"someone else's key").digest())


# ---------------------------------------------------------------- bundles


def bundle_files(
    entries: list[bytes],
    *,
    begin: int,
    end: int,
    first_size: int,
    last_size: int,
    signer: Signer = REAL_KEY,
    prior: bytes | None = None,
    prior_size: int | None = None,
) -> dict[str, bytes]:
    """Every file of a bundle over `entries` (the whole log), sealed by its manifest.

    `prior` is a checkpoint the auditor brought (signed earlier, maybe over another history);
    its consistency proof comes from this tree, as a server holding this history would make it.
    """
    size = len(entries)
    tree = Tree(entries)
    checkpoint = signer.checkpoint(size, tree.root(size))
    files = {
        "entries.jsonl": b"".join(entry + b"\n" for entry in entries[begin:end]),
        "range.json": canonical(tree.range_proof(begin, end, size)),
        "checkpoint.txt": checkpoint,
        "checkpoints/first.txt": signer.checkpoint(first_size, tree.root(first_size)),
        "checkpoints/last.txt": signer.checkpoint(last_size, tree.root(last_size)),
        "public-key.txt": signer.verifier_key.encode() + b"\n",
        "summary.html": b"<!doctype html><title>Ledger export</title><p>Test export</p>\n",
        "verify.py": VERIFY_PY.read_bytes(),
    }
    proofs = {
        "first": _consistency(tree, first_size, size),
        "last": _consistency(tree, last_size, size),
    }
    if prior is not None:
        assert prior_size is not None
        files["prior/checkpoint.txt"] = prior
        proofs["prior"] = _consistency(tree, prior_size, size)
    files["consistency.json"] = canonical(proofs)
    return seal(files)


def _consistency(tree: Tree, first: int, second: int) -> dict[str, object]:
    return {"from": first, "to": second, "proof": [b64(h) for h in tree.consistency(first, second)]}


def seal(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files with manifest.json (re)written over all the others."""
    others = {name: data for name, data in files.items() if name != "manifest.json"}
    manifest = {
        "format": "tideline-ledger-bundle",
        "version": 1,
        "exported_at": "2025-03-08T09:30:00.000000Z",
        "exported_by": "charlie",
        "files": {
            name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in others.items()
        },
    }
    return {**others, "manifest.json": json.dumps(manifest, indent=2).encode() + b"\n"}


def write_zip(files: dict[str, bytes], path: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def write_dir(files: dict[str, bytes], path: Path) -> Path:
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return path
