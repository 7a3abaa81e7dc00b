"""Every checkpoint goes off the host: to a directory another system collects and to a
webhook (a real HTTP receiver here), retried until it is taken."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from console.services import journal_append
from tracing.ledger.models import Checkpoint, WitnessPublication
from tracing.ledger.note import checkpoint_body_parse, note_verify, verifier_key_parse
from tracing.ledger.services import (
    WITNESS_LOCK,
    ledger_checkpoint,
    ledger_sequence,
    witness_publish,
)

pytestmark = pytest.mark.django_db


@dataclass
class Witness:
    """A webhook that keeps what it is sent; `status` is its answer."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def witness() -> Iterator[Witness]:
    target = Witness()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target.received.append({"headers": dict(self.headers.items()), "body": body})
            self.send_response(target.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target.url = f"http://127.0.0.1:{server.server_address[1]}/checkpoints"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield target
    server.shutdown()


def signed_checkpoint(actions: int = 3) -> Checkpoint:
    for number in range(actions):
        journal_append(actor="dana", action="login", subject=f"user:{number}")
    ledger_sequence(now=timezone.now())
    checkpoint = ledger_checkpoint(now=timezone.now())
    assert checkpoint is not None
    return checkpoint


def test_a_checkpoint_is_written_whole_to_the_witness_directory(settings, tmp_path, signing_key):
    settings.TIDELINE_WITNESS_DIR = str(tmp_path / "witness")
    checkpoint = signed_checkpoint()
    assert witness_publish(now=timezone.now()) == 1
    files = list((tmp_path / "witness").iterdir())
    assert [file.name for file in files] == [f"checkpoint-000000000003-{checkpoint.pk}.txt"]
    note = files[0].read_text(encoding="utf-8")
    assert note == checkpoint.note
    body = checkpoint_body_parse(note_verify(note, verifier_key_parse(signing_key.verifier_key)))
    assert body.size == 3 and body.root == bytes(checkpoint.root)
    publication = WitnessPublication.objects.get()
    assert publication.status == "published" and publication.published_at is not None
    assert witness_publish(now=timezone.now()) == 0  # nothing is sent twice


def test_a_directory_that_cannot_be_written_is_retried_later(settings, tmp_path):
    blocked = tmp_path / "witness"
    blocked.write_text("a file where the directory should be")
    settings.TIDELINE_WITNESS_DIR = str(blocked)
    signed_checkpoint()
    assert witness_publish(now=timezone.now()) == 0
    publication = WitnessPublication.objects.get()
    assert publication.status == "failed" and publication.attempts == 1
    assert "witness" in publication.error
    blocked.unlink()
    assert witness_publish(now=timezone.now()) == 1
    publication.refresh_from_db()
    assert publication.status == "published" and publication.attempts == 2
    assert publication.error == "" and len(list(blocked.iterdir())) == 1


def test_a_checkpoint_is_posted_to_the_witness_webhook(settings, witness: Witness):
    settings.TIDELINE_WITNESS_URL = witness.url
    checkpoint = signed_checkpoint()
    assert witness_publish(now=timezone.now()) == 1
    [posted] = witness.received
    assert posted["body"] == checkpoint.note.encode("utf-8")
    assert posted["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert WitnessPublication.objects.get().status == "published"


def test_a_webhook_that_refuses_is_retried_until_it_takes_the_checkpoint(
    settings, witness: Witness
):
    settings.TIDELINE_WITNESS_URL = witness.url
    witness.status = 503
    checkpoint = signed_checkpoint()
    assert witness_publish(now=timezone.now()) == 0
    publication = WitnessPublication.objects.get()
    assert publication.status == "failed" and "503" in publication.error
    witness.status = 200
    assert witness_publish(now=timezone.now()) == 1
    publication.refresh_from_db()
    assert publication.status == "published" and publication.attempts == 2
    assert [posted["body"] for posted in witness.received] == [checkpoint.note.encode()] * 2


def test_both_targets_get_every_checkpoint(settings, tmp_path, witness: Witness, signing_key):
    settings.TIDELINE_WITNESS_URL = witness.url
    settings.TIDELINE_WITNESS_DIR = str(tmp_path / "witness")
    signed_checkpoint(actions=2)
    signed_checkpoint(actions=1)
    assert witness_publish(now=timezone.now()) == 4
    assert len(witness.received) == 2 and len(list((tmp_path / "witness").iterdir())) == 2
    key = verifier_key_parse(signing_key.verifier_key)
    sizes = [
        checkpoint_body_parse(note_verify(p["body"].decode(), key)).size for p in witness.received
    ]
    assert sizes == [2, 3]


def test_an_unconfigured_witness_publishes_nothing(settings):
    settings.TIDELINE_WITNESS_URL = settings.TIDELINE_WITNESS_DIR = ""
    signed_checkpoint()
    assert not WitnessPublication.objects.exists()
    assert witness_publish(now=timezone.now()) == 0


def test_a_witness_that_is_down_is_tried_once_a_run_not_once_a_checkpoint(settings):
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.TIDELINE_WITNESS_URL = f"http://127.0.0.1:{port}/checkpoints"
    for _ in range(3):
        signed_checkpoint(actions=1)

    assert witness_publish(now=timezone.now()) == 0

    attempts = sorted(WitnessPublication.objects.values_list("attempts", flat=True))
    assert attempts == [0, 0, 1]


def test_one_publisher_at_a_time(settings, witness: Witness):
    settings.TIDELINE_WITNESS_URL = witness.url
    signed_checkpoint()
    publisher = connections.create_connection("default")  # another worker, publishing
    try:
        with publisher.cursor() as other:
            other.execute("SELECT pg_advisory_lock(hashtext(%s))", [WITNESS_LOCK])
            assert witness_publish(now=timezone.now()) == 0 and not witness.received
            # Released here: a closed connection's backend may hold its locks a moment longer.
            other.execute("SELECT pg_advisory_unlock(hashtext(%s))", [WITNESS_LOCK])
    finally:
        publisher.close()
    assert witness_publish(now=timezone.now()) == 1
