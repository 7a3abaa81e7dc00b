"""Auditors fetch checkpoints, proofs and the key, and check them with RFC 9162 alone."""

from __future__ import annotations

import base64

import pytest
from django.utils import timezone

from console.access import Role
from console.services import journal_append
from tracing.ledger import merkle
from tracing.ledger.note import checkpoint_body_parse, note_verify, verifier_key_parse
from tracing.ledger.services import ledger_checkpoint, ledger_sequence

pytestmark = pytest.mark.django_db


def b64(text: str) -> bytes:
    return base64.b64decode(text)


@pytest.fixture
def auditor(client_as):
    client = client_as(Role.AUDITOR)  # its creation and sign-in are journaled: entries 0, 1
    for number in range(12):
        journal_append(actor="test", action="login", subject=f"user:{number}")
    ledger_sequence(now=timezone.now())
    ledger_checkpoint(now=timezone.now())
    return client


def test_a_checkpoint_verifies_with_the_published_key(auditor) -> None:
    key = auditor.get("/api/v1/ledger/public-key").json()
    assert key["fingerprint"].startswith("SHA256:") and len(key["fingerprint"]) == 71
    checkpoint = auditor.get("/api/v1/ledger/checkpoint").json()
    verifier = verifier_key_parse(key["verifier_key"])
    body = checkpoint_body_parse(note_verify(checkpoint["note"], verifier))
    assert (body.origin, body.size) == (key["origin"], 14)
    assert base64.b64encode(body.root).decode() == checkpoint["root"]
    assert (
        body.extensions[0].startswith("time ") and checkpoint["fingerprint"] == key["fingerprint"]
    )


def test_inclusion_and_consistency_proofs_verify_against_checkpoints(auditor) -> None:
    first = auditor.get("/api/v1/ledger/checkpoint").json()
    journal_append(actor="test", action="logout", subject="user:1")
    ledger_sequence(now=timezone.now())
    ledger_checkpoint(now=timezone.now())
    second = auditor.get("/api/v1/ledger/checkpoint").json()
    assert second["size"] == 15
    for index in (0, 5, 14):
        proof = auditor.get(f"/api/v1/ledger/proof/inclusion?index={index}").json()
        leaf = merkle.leaf_hash(proof["entry"].encode())
        assert base64.b64encode(leaf).decode() == proof["leaf_hash"]
        path = [b64(h) for h in proof["path"]]
        assert merkle.inclusion_verify(leaf, index, 15, path, b64(second["root"]))
    # Against the tree the auditor held before: the older checkpoint's root.
    proof = auditor.get("/api/v1/ledger/proof/inclusion?index=13&size=14").json()
    leaf = merkle.leaf_hash(proof["entry"].encode())
    path = [b64(h) for h in proof["path"]]
    assert merkle.inclusion_verify(leaf, 13, 14, path, b64(first["root"]))
    # The first tree of all, one entry: its proof is empty, and valid.
    proof = auditor.get("/api/v1/ledger/proof/inclusion?index=0&size=1").json()
    leaf = merkle.leaf_hash(proof["entry"].encode())
    assert proof["path"] == [] and merkle.inclusion_verify(leaf, 0, 1, [], leaf)
    proof = auditor.get("/api/v1/ledger/proof/consistency?from=14&to=15").json()
    path = [b64(h) for h in proof["path"]]
    assert merkle.consistency_verify(14, 15, b64(first["root"]), b64(second["root"]), path)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("proof/inclusion", "index"),
        ("proof/inclusion?index=abc", "index"),
        ("proof/inclusion?index=%C2%B2", "index"),  # "²": a digit to str.isdigit, not to int()
        ("proof/inclusion?index=-1", "index"),
        ("proof/inclusion?index=14", "index"),
        ("proof/inclusion?index=1&size=999", "size"),
        ("proof/consistency?to=5", "from"),
        ("proof/consistency?from=6&to=5", "from"),
        ("proof/consistency?from=1&to=99", "to"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(auditor, query, field) -> None:
    response = auditor.get(f"/api/v1/ledger/{query}")
    assert response.status_code == 400
    assert field in response.content.decode()


@pytest.mark.parametrize("role", [Role.SUPPORT, Role.OPERATOR])
def test_only_auditors_and_admins_read_the_ledger(client_as, role) -> None:
    client = client_as(role)
    for path in ("checkpoint", "proof/inclusion?index=0", "proof/consistency?from=0", "public-key"):
        assert client.get(f"/api/v1/ledger/{path}").status_code == 403


def test_an_admin_reads_the_key(client_as) -> None:
    assert client_as(Role.ADMIN).get("/api/v1/ledger/public-key").status_code == 200
