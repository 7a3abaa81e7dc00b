"""Checkpoints as C2SP signed notes (tlog-checkpoint), signed with Ed25519.

Key forms follow Go's golang.org/x/mod/sumdb/note: a signer key
`PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || seed)>`, a verifier key
`<name>+<key id hex>+<base64(0x01 || public key)>`, key id = the first 4 bytes of
SHA-256(name || "\\n" || 0x01 || public key). The key name is the log's origin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tracing.ledger.canonical import rfc3339

ALGORITHM_ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space start each signature line


class NoteError(ValueError):
    """A key or note that is malformed or does not verify; the message says which."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALGORITHM_ED25519 + public_key).digest()[:4]


def fingerprint(public_key: bytes) -> str:
    """What an auditor pins: SHA256: and the hex of SHA-256(0x01 || public key)."""
    return "SHA256:" + hashlib.sha256(ALGORITHM_ED25519 + public_key).hexdigest()


def _name_checked(name: str) -> str:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise NoteError(f"key name {name!r} must be non-empty, without '+' or spaces")
    return name


@dataclass(frozen=True)
class SigningKey:
    name: str
    seed: bytes

    @property
    def private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def verifier_key(self) -> str:
        encoded = base64.b64encode(ALGORITHM_ED25519 + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def text(self) -> str:
        encoded = base64.b64encode(ALGORITHM_ED25519 + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    def sign(self, body: str) -> str:
        """The signed note: the body, a blank line, and this key's signature line."""
        if not body.endswith("\n"):
            raise NoteError("a note body ends with a newline")
        signature = self.private.sign(body.encode())
        encoded = base64.b64encode(self.key_id + signature).decode()
        return f"{body}\n{SIGNATURE_PREFIX}{self.name} {encoded}\n"


def signing_key_generate(name: str) -> SigningKey:
    return SigningKey(name=_name_checked(name), seed=secrets.token_bytes(32))


def signing_key_parse(text: str) -> SigningKey:
    # base64 has '+' too: like Go's note package, split off only the first four fields.
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a signing key reads PRIVATE+KEY+<name>+<key id>+<base64 key>")
    name, hex_id, encoded = parts[2], parts[3], parts[4]
    raw = _b64(encoded, "the signing key")
    if len(raw) != 33 or raw[:1] != ALGORITHM_ED25519:
        raise NoteError("the signing key is not an Ed25519 key (0x01 and a 32-byte seed)")
    key = SigningKey(name=_name_checked(name), seed=raw[1:])
    if key.key_id.hex() != hex_id.lower():
        raise NoteError("the signing key's key id does not match its name and key")
    return key


@dataclass(frozen=True)
class VerifierKey:
    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)


def verifier_key_parse(text: str) -> VerifierKey:
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key reads <name>+<key id>+<base64 key>")
    raw = _b64(parts[2], "the verifier key")
    if len(raw) != 33 or raw[:1] != ALGORITHM_ED25519:
        raise NoteError("the verifier key is not an Ed25519 key")
    key = VerifierKey(name=_name_checked(parts[0]), public_key=raw[1:])
    if key.key_id.hex() != parts[1].lower():
        raise NoteError("the verifier key's key id does not match its name and key")
    return key


def note_verify(note: str, key: VerifierKey) -> str:
    """The body of a note that this key signed; NoteError otherwise."""
    body, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    body += "\n"
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        raw = _b64(encoded, "a signature")
        if name != key.name or raw[:4] != key.key_id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(key.public_key).verify(raw[4:], body.encode())
        except InvalidSignature:
            raise NoteError(f"the signature by {name} does not verify") from None
        return body
    raise NoteError(f"the note carries no signature by {key.name}")


@dataclass(frozen=True)
class CheckpointBody:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "\n".join(lines) + "\n"


def checkpoint_body(origin: str, size: int, root: bytes, at: datetime) -> CheckpointBody:
    return CheckpointBody(origin, size, root, (f"time {rfc3339(at)}",))


def checkpoint_body_parse(body: str) -> CheckpointBody:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("a checkpoint has an origin, a size and a root hash, one per line")
    origin, size, root = lines[0], lines[1], lines[2]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise NoteError(f"checkpoint size {size[:20]!r} is not a decimal number")
    digest = _b64(root, "the checkpoint's root hash")
    if len(digest) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    return CheckpointBody(origin, int(size), digest, tuple(lines[3:-1]))


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
