"""The ledger for auditors: the latest signed checkpoint, RFC 9162 proofs, the public key.

Hashes are standard base64, as in checkpoints. A proof is made against any tree size up to
the log's current size, so an auditor can ask about the checkpoint they hold.
"""

from __future__ import annotations

import base64
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tracing.ledger import selectors
from tracing.ledger.signing import signing_key


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _number(request: Request, name: str, *, default: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ValidationError({name: f"{name} is required (a whole number from 0)."})
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²" is a digit to isdigit
        raise ValidationError({name: f"{name} must be a whole number from 0; got {raw[:40]!r}."})
    return int(raw)


def _size_checked(name: str, size: int) -> int:
    current = selectors.tree_size()
    if size > current:
        raise ValidationError({name: f"{name} {size} is beyond the log's size, {current}."})
    return size


def _latest_size() -> int | None:
    latest = selectors.checkpoint_latest()
    return latest.size if latest else None


class CheckpointView(APIView):
    """The latest signed checkpoint (a C2SP signed note) and where it was witnessed."""

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        checkpoint = selectors.checkpoint_latest()
        if checkpoint is None:
            raise NotFound("No checkpoint has been signed yet.")
        return Response(
            {
                "size": checkpoint.size,
                "root": _b64(bytes(checkpoint.root)),
                "created_at": checkpoint.created_at,
                "note": checkpoint.note,
                "fingerprint": checkpoint.key_fingerprint,
                "witnessed": [
                    {"target": w.target, "status": w.status, "published_at": w.published_at}
                    for w in checkpoint.witnessed.order_by("id")
                ],
            }
        )


class InclusionProofView(APIView):
    """PATH(index, D[size]) of RFC 9162 2.1.3, with the entry and its leaf hash."""

    @extend_schema(
        parameters=[
            OpenApiParameter("index", int, required=True),
            OpenApiParameter("size", int, description="default: the latest checkpoint's size"),
        ],
        responses=dict,
    )
    def get(self, request: Request) -> Response:
        index = _number(request, "index")
        if request.query_params.get("size") in (None, ""):
            latest = _latest_size()
            if not latest:
                raise ValidationError(
                    {"size": "size is required: no checkpoint has been signed yet."}
                )
            size = latest
        else:
            size = _number(request, "size")
        proof = selectors.inclusion_at(index, size)
        if size > proof.tree_size:
            raise ValidationError(
                {"size": f"size {size} is beyond the log's size, {proof.tree_size}."}
            )
        if proof.path is None:
            raise ValidationError({"index": f"index {index} is not in a tree of size {size}."})
        entry = proof.entry
        return Response(
            {
                "index": index,
                "size": size,
                "entry": entry[0].decode() if entry else None,
                "leaf_hash": _b64(entry[1]) if entry else None,
                "path": [_b64(digest) for digest in proof.path],
            }
        )


class ConsistencyProofView(APIView):
    """PROOF(from, D[to]) of RFC 9162 2.1.4: the tree of `to` extends the tree of `from`."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", int, required=True),
            OpenApiParameter("to", int, description="default: the latest checkpoint's size"),
        ],
        responses=dict,
    )
    def get(self, request: Request) -> Response:
        first = _number(request, "from")
        latest = _latest_size()
        second = _size_checked("to", _number(request, "to", default=latest if latest else 0))
        if first > second:
            raise ValidationError({"from": f"from {first} is larger than to {second}."})
        path = selectors.consistency_proof(first, second)
        return Response({"from": first, "to": second, "path": [_b64(d) for d in path]})


class PublicKeyView(APIView):
    """The verifier key (signed-note form) and the fingerprint an auditor pins."""

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        key = signing_key()
        body: dict[str, Any] = {
            "origin": key.name,
            "verifier_key": key.verifier_key,
            "fingerprint": key.fingerprint,
        }
        return Response(body)
