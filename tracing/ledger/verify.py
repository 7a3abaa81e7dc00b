#!/usr/bin/env python3
"""Verify a Tideline ledger export bundle offline.

    python3 verify.py bundle.zip --key SHA256:<fingerprint>
    python3 verify.py path/to/unzipped-bundle --key SHA256:<fingerprint>
    python3 verify.py --key SHA256:<fingerprint>      (run from inside an unzipped bundle)

Needs only Python 3's standard library (3.7 or newer) and nothing from Tideline, so an
auditor can run it on a machine that has never seen Tideline. Prints
`OK: N entries, tree size S, root R, signed by K` (R: the root hash in base64, as the
checkpoint writes it; K: the key's fingerprint) and exits 0, or prints `FAIL: <where>: <why>`
naming the first file, line, proof, checkpoint or key that does not hold, and exits 1.
Without --key it proves only that the bundle is consistent in itself, not who signed it.
The bundle layout is described in bundle_format.md next to this file in Tideline's source.

Standards implemented here: RFC 8785 (JSON canonicalisation, without floats), RFC 9162
section 2.1 (Merkle tree hashes, inclusion and consistency proofs), C2SP signed-note and
tlog-checkpoint, and Ed25519 verification from RFC 8032 section 5.1.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
import zipfile
import zlib

# ---------------------------------------------------------------- Ed25519 (RFC 8032 5.1.7)

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _point_add(p: tuple, q: tuple) -> tuple:
    # Extended homogeneous coordinates (X, Y, Z, T), RFC 8032 section 5.1.4.
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _point_mul(scalar: int, point: tuple) -> tuple:
    result = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = _point_add(result, point)
        point = _point_add(point, point)
        scalar >>= 1
    return result


def _point_equal(p: tuple, q: tuple) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % _P == 0 and (p[1] * q[2] - q[1] * p[2]) % _P == 0


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    return _P - x if (x & 1) != sign else x


def _point_decode(encoded: bytes) -> tuple | None:
    y = int.from_bytes(encoded, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


# The base point B of RFC 8032 section 5.1 (y = 4/5, x positive).
_BASE_X = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BASE_Y = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_BASE = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % _P)


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """RFC 8032 Ed25519 verification (cofactorless, rejecting a non-canonical S, like Go)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _point_decode(public_key)
    r = _point_decode(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little")
    return _point_equal(_point_mul(s, _BASE), _point_add(r, _point_mul(k % _L, a)))


# ---------------------------------------------------------------- RFC 8785 (no floats)

_MAX_SAFE_INTEGER = 2**53 - 1


def _no_floats(text: str) -> None:
    raise ValueError(f"number {text} is not an integer (entries carry no floats)")


def _safe_integer(text: str) -> int:
    value = int(text)
    if abs(value) > _MAX_SAFE_INTEGER:
        raise ValueError(f"integer {value} is beyond 2^53 - 1 (RFC 8785 numbers are doubles)")
    return value


def _no_duplicate_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object has the same key twice")
    return obj


# Sorting keys by code point (as json does) equals RFC 8785's UTF-16 order unless a line
# holds characters from U+E000 up, whose UTF-8 lead bytes are 0xEE to 0xF4; only such lines
# need the slower serialiser below. The fast one is json's C encoder.
_FAST_CANONICAL = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode
_HIGH_CHARACTERS = re.compile(b"[\xee-\xf4]")


def canonical(value: object) -> str:
    """The RFC 8785 form of a parsed JSON value that holds no floats."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond 2^53 - 1 (RFC 8785 numbers are doubles)")
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        # RFC 8785 sorts keys by their UTF-16 code units.
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(canonical(k) + ":" + canonical(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def check_canonical(line: bytes) -> None:
    """Raise ValueError unless `line` is exactly the RFC 8785 form of a JSON object."""
    try:
        text = line.decode("utf-8")
        value = json.loads(
            text,
            parse_float=_no_floats,
            parse_int=_safe_integer,
            parse_constant=_no_floats,
            object_pairs_hook=_no_duplicate_keys,
        )
        if not isinstance(value, dict):
            raise ValueError("an entry must be a JSON object")
        slow = _HIGH_CHARACTERS.search(line)
        again = (canonical(value) if slow else _FAST_CANONICAL(value)).encode("utf-8")
    except UnicodeError as error:
        raise ValueError(f"not valid UTF-8 or Unicode: {error}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if again != line:
        shorter = min(len(line), len(again))
        at = next((i for i in range(shorter) if line[i] != again[i]), shorter)
        raise ValueError(f"not in RFC 8785 canonical form (first difference at byte {at + 1})")


# ---------------------------------------------------------------- Merkle tree (RFC 9162 2.1)


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class CompactRange:
    """The perfect subtrees covering [0, position): appending merges equal-sized neighbours."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.sizes: list[int] = []
        self.position = 0

    def append(self, digest: bytes, leaves: int = 1) -> None:
        self.position += leaves
        while self.sizes and self.sizes[-1] == leaves:
            digest = node_hash(self.hashes.pop(), digest)
            leaves += self.sizes.pop()
        self.hashes.append(digest)
        self.sizes.append(leaves)

    def extend(self, hashes: list[bytes], sizes: list[int]) -> None:
        for i, leaves in enumerate(sizes):
            self.append(hashes[i], leaves)

    def root(self) -> bytes:
        """The RFC 9162 root of the tree of `position` leaves, once the range starts at 0."""
        if not self.hashes:
            return hashlib.sha256(b"").digest()
        digest = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            digest = node_hash(left, digest)
        return digest


def left_sizes(begin: int) -> list[int]:
    """Sizes of the perfect subtrees covering [0, begin): its binary digits, largest first."""
    return [1 << k for k in reversed(range(begin.bit_length())) if begin >> k & 1]


def right_sizes(end: int, size: int) -> list[int]:
    """Sizes of the maximal aligned perfect subtrees covering [end, size), left to right."""
    sizes, position = [], end
    while position < size:
        leaves = position & -position if position else 1 << (size.bit_length() - 1)
        while position + leaves > size:
            leaves >>= 1
        sizes.append(leaves)
        position += leaves
    return sizes


def verify_inclusion(index: int, size: int, digest: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does `path` prove leaf `digest` at `index` in `root`?"""
    if index >= size:
        return False
    fn, sn, result = index, size - 1, digest
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


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: did the tree of `first` leaves grow into `second`'s?"""
    if first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for step in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(step, fr), node_hash(step, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, step)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


# ---------------------------------------------------------------- keys, notes, checkpoints


class Failure(Exception):
    """What does not hold, and where: printed as `FAIL: <where>: <why>`."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")


def b64decode(text: str, what: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError):
        raise Failure(where, f"{what} is not standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise Failure(where, f"{what} is not standard padded base64")
    return raw


def b64hash(text: object, what: str, where: str) -> bytes:
    if not isinstance(text, str):
        raise Failure(where, f"{what} is not a base64 string")
    digest = b64decode(text, what, where)
    if len(digest) != 32:
        raise Failure(where, f"{what} is not a 32-byte SHA-256 hash")
    return digest


def _valid_key_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def _key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + public_key).digest()[:4]


class VerifierKey:
    """A C2SP signed-note verifier key: `<name>+<key id hex>+<base64(0x01 || public key)>`."""

    def __init__(self, text: str, where: str) -> None:
        # Base64 has '+' too: like Go's note package, split off only the first two fields.
        parts = text.split("+", 2)
        if len(parts) != 3 or not _valid_key_name(parts[0]):
            raise Failure(where, "not a verifier key of the form <name>+<key id>+<base64 key>")
        self.name, key_id_hex, key_b64 = parts
        raw = b64decode(key_b64, "the key", where)
        if len(raw) != 33 or raw[0] != 1:
            raise Failure(where, "the key is not an Ed25519 key (0x01 followed by 32 bytes)")
        self.public_key = raw[1:]
        self.key_id = _key_id(self.name, self.public_key)
        if key_id_hex != self.key_id.hex():
            raise Failure(
                where, f"key id {key_id_hex} does not match the key ({self.key_id.hex()})"
            )
        self.fingerprint = "SHA256:" + hashlib.sha256(raw).hexdigest()


_SIGNATURE_LINE = re.compile(r"\u2014 (\S+) (\S+)\Z")
_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\Z")


class Checkpoint:
    """A C2SP tlog-checkpoint in a signed note, its signature checked against `key`."""

    def __init__(self, raw: bytes, key: VerifierKey, where: str) -> None:
        body, signatures = _split_note(raw, where)
        _check_signatures(body, signatures, key, where)
        lines = body.decode("utf-8").split("\n")[:-1]
        if len(lines) < 3 or not all(lines):
            raise Failure(where, "a checkpoint has an origin, a size, a root hash, no empty lines")
        self.origin = lines[0]
        if self.origin != key.name:
            raise Failure(where, f"origin {self.origin!r} is not the key's name {key.name!r}")
        if not _SIZE.match(lines[1]) or int(lines[1]) >= 2**64:
            raise Failure(where, f"tree size {lines[1]!r} is not a decimal number")
        self.size = int(lines[1])
        self.root_b64 = lines[2]
        self.root = b64hash(lines[2], "the root hash", where)


def _split_note(raw: bytes, where: str) -> tuple[bytes, list[str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeError:
        raise Failure(where, "not UTF-8 text") from None
    if any(ord(c) < 0x20 and c != "\n" for c in text) or not text.endswith("\n"):
        raise Failure(where, "not a signed note (control characters, or no final newline)")
    split = text.rfind("\n\n")
    if split < 0:
        raise Failure(where, "not a signed note (no blank line before the signatures)")
    signatures = text[split + 2 :].split("\n")[:-1]
    if not signatures:
        raise Failure(where, "the note carries no signature")
    return text[: split + 1].encode("utf-8"), signatures


def _check_signatures(body: bytes, lines: list[str], key: VerifierKey, where: str) -> None:
    found = False
    for line in lines:
        match = _SIGNATURE_LINE.match(line)
        if not match or not _valid_key_name(match.group(1)):
            raise Failure(where, f"malformed signature line {line!r}")
        raw = b64decode(match.group(2), "a signature", where)
        if match.group(1) != key.name or raw[:4] != key.key_id:
            continue  # C2SP: signatures by keys the verifier does not know are ignored
        if len(raw) != 68 or not ed25519_verify(key.public_key, body, raw[4:]):
            raise Failure(
                where, f"the signature by {key.name} (key id {key.key_id.hex()}) is not valid"
            )
        found = True
    if not found:
        raise Failure(
            where, f"not signed by the bundle's key {key.name} (key id {key.key_id.hex()})"
        )


# ---------------------------------------------------------------- the bundle

REQUIRED_FILES = (
    "entries.jsonl",
    "range.json",
    "checkpoint.txt",
    "checkpoints/first.txt",
    "checkpoints/last.txt",
    "consistency.json",
    "public-key.txt",
    "summary.html",
    "verify.py",
)
PRIOR = "prior/checkpoint.txt"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


class Bundle:
    """The files of a bundle, from a zip or a directory; only names the manifest lists."""

    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.isdir(path):
            self.zip, self.prefix = None, ""
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as error:
                raise Failure(path, f"cannot open the bundle: {error}") from None
            names = self.zip.namelist()
            # Tolerate a bundle re-zipped from its folder: one top directory holding it all.
            tops = {name.split("/", 1)[0] for name in names}
            nested = len(tops) == 1 and f"{next(iter(tops))}/manifest.json" in names
            self.prefix = f"{next(iter(tops))}/" if nested else ""
        self.manifest = self._read_manifest()

    def _read_raw(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(self.prefix + name)
            with open(os.path.join(self.path, *name.split("/")), "rb") as file:
                return file.read()
        except (KeyError, FileNotFoundError):
            raise Failure(name, "missing from the bundle") from None
        except (OSError, zipfile.BadZipFile, zlib.error) as error:
            raise Failure(name, f"unreadable: {error}") from None

    def _read_manifest(self) -> dict:
        try:
            manifest = json.loads(self._read_raw("manifest.json"))
        except ValueError:
            raise Failure("manifest.json", "not valid JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != "tideline-ledger-bundle":
            raise Failure("manifest.json", "not a Tideline ledger bundle manifest")
        if manifest.get("version") != 1:
            raise Failure("manifest.json", f"bundle version {manifest.get('version')!r} is not 1")
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(
            isinstance(d, str) and _DIGEST.match(d) for d in files.values()
        ):
            raise Failure("manifest.json", '"files" must map file names to "sha256:<hex>"')
        for name in files:
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                raise Failure("manifest.json", f"file name {name!r} leaves the bundle")
        for name in REQUIRED_FILES:
            if name not in files:
                raise Failure("manifest.json", f"{name} is not listed")
        return manifest

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    def read(self, name: str) -> bytes:
        if not self.has(name):
            raise Failure(name, "not listed in manifest.json")
        return self._read_raw(name)

    def check_digests(self) -> None:
        for name, digest in sorted(self.manifest["files"].items()):
            if "sha256:" + hashlib.sha256(self._read_raw(name)).hexdigest() != digest:
                raise Failure(name, "its SHA-256 differs from manifest.json: changed after export")


def read_json(bundle: Bundle, name: str) -> dict:
    try:
        value = json.loads(bundle.read(name))
    except ValueError:
        raise Failure(name, "not valid JSON") from None
    if not isinstance(value, dict):
        raise Failure(name, "not a JSON object")
    return value


def json_size(value: object, what: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Failure(where, f"{what} is not a non-negative integer")
    return value


def json_hashes(value: object, count: int | None, what: str, where: str) -> list[bytes]:
    if not isinstance(value, list):
        raise Failure(where, f"{what} is not a list of base64 hashes")
    if count is not None and len(value) != count:
        raise Failure(where, f"{what} holds {len(value)} hashes, the range needs {count}")
    return [b64hash(item, f"{what}[{i}]", where) for i, item in enumerate(value)]


# ---------------------------------------------------------------- the checks


class Verification:
    """Every check, in the order that names the most specific failure first."""

    def __init__(self, bundle: Bundle, pinned: str | None, prior_file: str | None) -> None:
        self.bundle = bundle
        self.key = VerifierKey(
            bundle.read("public-key.txt").decode("utf-8", "replace").rstrip("\n"), "public-key.txt"
        )
        if pinned is not None and self.key.fingerprint != pinned:
            raise Failure(
                "public-key.txt",
                f"the bundle is signed by {self.key.fingerprint}, not by the pinned key {pinned}",
            )
        self.checkpoint = Checkpoint(bundle.read("checkpoint.txt"), self.key, "checkpoint.txt")
        self.first = self._checkpoint("checkpoints/first.txt")
        self.last = self._checkpoint("checkpoints/last.txt")
        self.prior = self._checkpoint(PRIOR) if bundle.has(PRIOR) else None
        if prior_file is not None:
            self._check_prior_file(prior_file)

    def _checkpoint(self, name: str) -> Checkpoint:
        checkpoint = Checkpoint(self.bundle.read(name), self.key, name)
        if checkpoint.size > self.checkpoint.size:
            raise Failure(name, f"tree size {checkpoint.size} is beyond checkpoint.txt's")
        return checkpoint

    def _check_prior_file(self, path: str) -> None:
        try:
            with open(path, "rb") as file:
                mine = Checkpoint(file.read(), self.key, path)
        except OSError as error:
            raise Failure(path, f"cannot read it: {error}") from None
        if self.prior is None:
            raise Failure(
                PRIOR, f"missing, but you brought {path}: the bundle cannot show it grew from it"
            )
        if (mine.size, mine.root) != (self.prior.size, self.prior.root):
            raise Failure(PRIOR, f"it is not the checkpoint in {path} (tree size {mine.size})")

    def run(self) -> tuple[int, Checkpoint]:
        begin, end, left, right = self._range()
        count = self._entries(begin, end, left, right)
        self._consistency()
        self.bundle.check_digests()
        return count, self.checkpoint

    def _range(self) -> tuple[int, int, list[bytes], list[bytes]]:
        proof = read_json(self.bundle, "range.json")
        begin = json_size(proof.get("begin"), '"begin"', "range.json")
        end = json_size(proof.get("end"), '"end"', "range.json")
        size = json_size(proof.get("size"), '"size"', "range.json")
        if size != self.checkpoint.size:
            raise Failure(
                "range.json",
                f"size {size} is not checkpoint.txt's tree size {self.checkpoint.size}",
            )
        if not begin <= end <= size:
            raise Failure("range.json", f"[{begin}, {end}) is not a range within tree size {size}")
        if begin < end and not begin < self.first.size:
            raise Failure(
                "checkpoints/first.txt",
                f"tree size {self.first.size} does not hold the first entry (index {begin})",
            )
        if end > self.last.size:
            raise Failure(
                "checkpoints/last.txt",
                f"tree size {self.last.size} does not hold the last entry (index {end - 1})",
            )
        left = json_hashes(proof.get("left"), len(left_sizes(begin)), '"left"', "range.json")
        right = json_hashes(
            proof.get("right"), len(right_sizes(end, size)), '"right"', "range.json"
        )
        return begin, end, left, right

    def _entries(self, begin: int, end: int, left: list[bytes], right: list[bytes]) -> int:
        data = self.bundle.read("entries.jsonl")
        if data and not data.endswith(b"\n"):
            raise Failure("entries.jsonl", "the last line does not end with a newline")
        lines = data.split(b"\n")[:-1]
        if len(lines) != end - begin:
            raise Failure(
                "entries.jsonl",
                f"holds {len(lines)} entries, range.json says indexes {begin} to {end - 1} "
                f"({end - begin}): an entry was removed or added",
            )
        tree = CompactRange()
        tree.extend(left, left_sizes(begin))
        checks = {
            c.size: (name, c)
            for name, c in (
                ("checkpoints/last.txt", self.last),
                ("checkpoints/first.txt", self.first),
            )
            if begin < c.size <= end
        }
        since = 1
        for number, line in enumerate(lines, start=1):
            try:
                check_canonical(line)
            except ValueError as error:
                raise Failure(
                    f"entries.jsonl line {number} (index {begin + number - 1})", str(error)
                ) from None
            tree.append(leaf_hash(line))
            if tree.position in checks:
                name, checkpoint = checks[tree.position]
                self._compare(tree.root(), checkpoint, name, begin, since, number)
                since = number + 1
        tree.extend(right, right_sizes(end, self.checkpoint.size))
        self._compare(tree.root(), self.checkpoint, "checkpoint.txt", begin, since, len(lines))
        return len(lines)

    @staticmethod
    def _compare(
        root: bytes, checkpoint: Checkpoint, name: str, begin: int, since: int, until: int
    ) -> None:
        if root == checkpoint.root:
            return
        if since > until:
            raise Failure(
                "range.json",
                f"the range proof's hashes do not rebuild the root of {name} "
                f"(tree size {checkpoint.size}): a proof hash was changed",
            )
        raise Failure(
            f"entries.jsonl lines {since}-{until} (indexes {begin + since - 1}-{begin + until - 1})"
            " or range.json",
            f"together they do not rebuild the root of {name} (tree size {checkpoint.size}): "
            "an entry there was changed, removed, added or moved, or a proof hash was changed",
        )

    def _consistency(self) -> None:
        proofs = read_json(self.bundle, "consistency.json")
        named = [
            ("first", "checkpoints/first.txt", self.first),
            ("last", "checkpoints/last.txt", self.last),
        ]
        if self.prior is not None:
            named.append(("prior", PRIOR, self.prior))
        for key, name, checkpoint in named:
            where = f"consistency.json {key!r}"
            proof = proofs.get(key)
            if not isinstance(proof, dict):
                raise Failure(where, f"missing: no consistency proof for {name}")
            if (proof.get("from"), proof.get("to")) != (checkpoint.size, self.checkpoint.size):
                raise Failure(
                    where, f"it is not a proof from {name}'s tree size to checkpoint.txt's"
                )
            path = json_hashes(proof.get("proof"), None, '"proof"', where)
            if not verify_consistency(
                checkpoint.size, self.checkpoint.size, checkpoint.root, self.checkpoint.root, path
            ):
                raise Failure(
                    name,
                    f"the log at tree size {checkpoint.size} did not grow into checkpoint.txt "
                    f"(tree size {self.checkpoint.size}): the consistency proof fails, so the "
                    "history was rewritten or the proof was changed",
                )


def fingerprint_argument(text: str) -> str:
    value = text.strip()
    if value[:7].upper() == "SHA256:":
        value = value[7:]
    if not re.match(r"[0-9a-fA-F]{64}\Z", value):
        raise argparse.ArgumentTypeError("expected SHA256:<64 hex digits>, as /ledger/ shows it")
    return "SHA256:" + value.lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Tideline ledger export bundle offline.")
    parser.add_argument(
        "bundle",
        nargs="?",
        help="the bundle .zip or its unzipped folder (default: this script's folder)",
    )
    parser.add_argument(
        "--key", type=fingerprint_argument, help="the key fingerprint you pinned (SHA256:...)"
    )
    parser.add_argument(
        "--prior", metavar="CHECKPOINT", help="a checkpoint you kept from an earlier export"
    )
    args = parser.parse_args(argv)
    path = args.bundle or os.path.dirname(os.path.abspath(__file__))
    try:
        verification = Verification(Bundle(path), args.key, args.prior)
        count, checkpoint = verification.run()
    except Failure as failure:
        print(f"FAIL: {failure}")
        return 1
    print(
        f"OK: {count} entries, tree size {checkpoint.size}, root {checkpoint.root_b64}, signed by {verification.key.fingerprint}"
    )
    if args.key is None:
        print(
            "WARNING: no --key given: this proves only that the bundle is consistent in itself, "
            "not who signed it. Compare the fingerprint above with the one Tideline shows on "
            "/ledger/ (or one you pinned earlier) and run again with --key.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
