"""Reads: what a support person waits for, timed against a live server."""

from __future__ import annotations

import math
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from urllib.parse import quote

import httpx
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db import connection

from console.access import Role
from console.services import api_token_create, user_create

FLOORS_MS = {"flow API": 50.0, "flow page": 150.0, "search": 100.0, "dashboard": 300.0}


@dataclass
class Figure:
    name: str
    floor: float  # ms, or s for the lag
    values: list[float] = field(default_factory=list)  # seconds, of 200 answers only
    refused: Counter[int] = field(default_factory=Counter)  # status (0: no answer) → count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def percentile(self, share: float) -> float | None:
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else None

    def add(self, status: int, seconds: float) -> None:
        with self.lock:
            if status == 200:
                self.values.append(seconds)
            else:
                self.refused[status] += 1


def support_session() -> tuple[str, str]:
    """A support user's personal API token and the key of a signed-in session."""
    name = f"bench-support-{secrets.token_hex(3)}"
    user = user_create(
        username=name, role=Role.SUPPORT, password=secrets.token_urlsafe(16), actor="bench"
    )
    token = api_token_create(user=user, name="bench flows").secret
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return token, str(session.session_key)


def _sample(query: str, size: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(query + " ORDER BY random() LIMIT %s", [size])
        return [
            bytes(value).hex() if isinstance(value, bytes | memoryview) else value
            for (value,) in cursor.fetchall()
        ]


READS = (  # figure, its floor, who asks, the path for one sample
    ("flow API   GET /api/v1/flows/<id>", "flow API", "api", "/api/v1/flows/{flow}"),
    ("flow page  GET /flows/<id>", "flow page", "page", "/flows/{flow}"),
    ("search by correlation ID", "search", "api", "/api/v1/search?q={flow}"),
    ("search by shipment number", "search", "api", "/api/v1/search?q={shipment}"),
    ("search by trace ID", "search", "api", "/api/v1/search?q={trace}"),
    ("dashboard  GET / (today)", "dashboard", "page", "/"),
    ("dashboard  GET /?window=week", "dashboard", "page", "/?window=week"),
)
Read = tuple[Figure, dict[str, str], list[str]]


def reads_plan(*, size: int, api_token: str, session: str) -> list[Read]:
    """Each figure with its headers and paths, over random flows, shipments and traces."""
    samples = zip(
        _sample("SELECT correlation_id FROM flows_flowinstance", size),
        _sample("SELECT value FROM flows_flowkey WHERE name = 'shipment'", size),
        _sample("SELECT trace_id FROM flows_flowtrace", size),
        strict=False,
    )
    chosen = [{"flow": quote(f), "shipment": quote(s), "trace": t} for f, s, t in samples]
    headers = {
        "api": {"Authorization": f"Token {api_token}"},
        "page": {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"},
    }
    return [
        (Figure(name, FLOORS_MS[floor]), headers[who], [path.format(**one) for one in chosen])
        for name, floor, who, path in READS
    ]


def reads_measure(url: str, plan: list[Read], *, requests: int, clients: int) -> list[Figure]:
    for figure, headers, paths in plan:
        if not paths:
            continue
        wanted = [paths[number % len(paths)] for number in range(requests)]
        warm_up = Figure(figure.name, figure.floor)
        timed_gets(url, wanted[: clients * 2], headers=headers, clients=clients, figure=warm_up)
        timed_gets(url, wanted, headers=headers, clients=clients, figure=figure)
    return [figure for figure, _, _ in plan]


def timed_gets(
    url: str, paths: list[str], *, headers: dict[str, str], clients: int, figure: Figure
) -> None:
    """GET every path once from `clients` concurrent connections, timing each answer."""
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    for path in paths:
        pending.put(path)

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            while True:
                try:
                    path = pending.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    status = http.get(path).status_code
                except httpx.HTTPError:
                    status = 0
                figure.add(status, time.perf_counter() - started)

    together([client] * clients)


def together(work: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
