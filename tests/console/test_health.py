"""Liveness, readiness, metrics and the request log."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import Client

from console.access import Role
from console.logs import JsonFormatter
from console.services import api_token_create

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_sign_in(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


def test_readyz_is_ready_when_database_and_broker_answer(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "down": [],
        "checks": {"database": True, "broker": True},
    }


def test_readyz_names_the_broker_when_it_is_down(client: Client, settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["down"] == ["broker"]


def test_metrics_answer_loopback_when_no_token_is_set(client: Client) -> None:
    client.get("/healthz")
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert b'tideline_http_requests_total{method="GET",status="200"}' in response.content
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 401


def test_metrics_demand_the_token_when_one_is_set(client: Client, settings) -> None:
    settings.METRICS_TOKEN = "scrape-me-please"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me-please").status_code == 200


def test_each_request_is_one_json_line_without_secrets(client: Client, make_user, caplog) -> None:
    secret = api_token_create(user=make_user(Role.SUPPORT), name="cli").secret
    with caplog.at_level(logging.INFO, logger="tideline.request"):
        Client().get(
            "/api/v1/me?q=order-4711",
            HTTP_AUTHORIZATION=f"Token {secret}",
            HTTP_X_REQUEST_ID="req-42",
        )
    (record,) = [r for r in caplog.records if r.name == "tideline.request"]
    line = JsonFormatter().format(record)
    logged = json.loads(line)
    assert "\n" not in line
    assert logged["request_id"] == "req-42"
    assert logged["user"] == "alice"
    assert logged["status"] == 200 and logged["path"] == "/api/v1/me"
    assert isinstance(logged["duration_ms"], float)
    assert secret not in line and "order-4711" not in line


def test_behind_https_loopback_alone_does_not_open_metrics(client: Client, settings) -> None:
    settings.TIDELINE_HTTPS = True  # a TLS proxy on this host makes every request loopback
    response = client.get(
        "/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_PROTO="https", secure=True
    )
    assert response.status_code == 401
