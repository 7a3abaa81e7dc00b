"""Prometheus metrics. Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes a scrape see all workers."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

HTTP_REQUESTS = Counter(
    "tideline_http_requests_total",
    "HTTP requests answered, by method and status.",
    ["method", "status"],
)
HTTP_DURATION = Histogram(
    "tideline_http_request_duration_seconds", "Time to answer an HTTP request.", ["method"]
)


def scrape() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(PROCESS_REGISTRY)
