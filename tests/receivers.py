"""A real HTTP receiver on a free local port: the replay target and the alert webhook of the
tests. The `receiver` fixture (tests/conftest.py) serves one per test; each suite's conftest
adds its own allow-list."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """Records every POST; answers with `statuses` in turn, then as `behaviour` says."""

    url: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    behaviour: str = "ok"  # ok | slow | unavailable (503, health too) | hang
    slow_seconds: float = 0.25
    hang_seconds: float = 6.0
    health_checks: int = 0  # GETs of any path: 503 while unavailable
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        """The allow-list prefix that admits this receiver and nothing else."""
        return self.url.removesuffix("in")

    @property
    def host(self) -> str:
        """host:port, as a webhook allow-list names it."""
        return self.url.split("/")[2]

    def wait_for(self, count: int, seconds: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(self.deliveries) < count:
            time.sleep(0.05)
        return self.deliveries

    def answer(self) -> int:
        with self.lock:
            if self.statuses:
                return self.statuses.pop(0)
        return 503 if self.behaviour == "unavailable" else 200


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = receiver.answer()
            # Recorded on arrival: a sender that gave up on a hanging answer was still received.
            with receiver.lock:
                receiver.deliveries.append({
                    "path": self.path, "headers": dict(self.headers.items()), "body": body,
                    "sha256": hashlib.sha256(body).hexdigest(), "answered": status,
                })  # fmt: skip
            if receiver.behaviour == "hang":
                time.sleep(receiver.hang_seconds)
            elif receiver.behaviour == "slow":
                time.sleep(receiver.slow_seconds)
            self._answer(status)

        def do_GET(self) -> None:
            with receiver.lock:
                receiver.health_checks += 1
            self._answer(503 if receiver.behaviour == "unavailable" else 200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def receiver_serving() -> Iterator[Receiver]:
    target = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
    target.url = f"http://127.0.0.1:{server.server_address[1]}/in"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
