"""Prometheus metrics of the ingest edge, per stream (traces, records, dead_letters) and sender."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ACCEPTED = Counter("tideline_ingest_accepted_total", "Items stored.", ["stream", "sender"])
DUPLICATES = Counter(
    "tideline_ingest_duplicates_total", "Items already stored (retries).", ["stream", "sender"]
)
REJECTED = Counter(
    "tideline_ingest_rejected_total",
    "Items or requests refused, by reason.",
    ["stream", "sender", "reason"],
)
LATENCY = Histogram(
    "tideline_ingest_request_seconds",
    "Time to answer an ingest request.",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
