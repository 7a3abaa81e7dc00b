"""The flow API and search: one answer per question support brings, all through indexes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from rest_framework import serializers

from console.access import Role
from tests.tracing.seafood import Runtime, definitions_load, new_trace
from tracing.flows.api import FlowSerializer
from tracing.flows.models import FlowInstance
from tracing.flows.search import flows_search
from tracing.flows.services.summary import flows_summarize

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=3)


@pytest.fixture
def orders() -> dict[str, str]:
    """4711 failed at the certificate, 4712 stalled, 4713 completed; their trace IDs."""
    definitions_load()
    runtime = Runtime.connected()
    traces = {
        "4711": runtime.order("4711", T0, until="production.notify"),
        "4712": runtime.order("4712", T0, until="stock.reserve"),
        "4713": runtime.order("4713", T0, until="invoice.basis"),
    }
    runtime.record("TMS", "shipment.book", "delivered", T0 + timedelta(minutes=45), correlation="4713",
                   message_id="msg-ship-4713", business_keys={"shipment": "SHP-1"})  # fmt: skip
    for order in ("4712", "4713"):  # one invoice number shared by two orders
        runtime.record("FIN", "invoice.note", "received", T0 + timedelta(minutes=55), correlation=order,
                       business_keys={"invoice": "INV-77"})  # fmt: skip
    runtime.send()
    runtime.dead_letter(
        "QMS", T0 + timedelta(minutes=40), correlation="4711", message_id="msg-cert-4711"
    )
    flows_summarize(now=NOW)
    return traces


def test_the_flow_api_answers_status_sentence_owner_and_facts(
    client_as: Callable[[Role | None], Client], orders: dict[str, str]
) -> None:
    response = client_as(Role.SUPPORT).get("/api/v1/flows/4711")
    assert response.status_code == 200
    flow = response.json()
    assert flow["status"] == "failed" and flow["stopped_at"] == "certificate_approved"
    assert flow["sentence"].startswith("Stopped at Certificate approved (QMS)")
    assert flow["owner"]["team"] == "Quality" and flow["owner"]["runbook_url"].endswith("/qms")
    assert [step["key"] for step in flow["steps"]][:4] == [
        "order_created", "stock_reserved", "production_notified", "certificate_approved",
    ]  # fmt: skip
    assert flow["steps"][3]["state"] == "failed"
    assert flow["traces"] == [{"trace_id": orders["4711"], "via": "correlated"}]
    assert [span["name"] for span in flow["spans"]] == ["order.create"]
    assert [record["step"] for record in flow["records"]] == ["stock.reserve", "production.notify"]
    assert flow["dead_letters"][0]["error"] == "HTTP 503 from QMS"
    assert flow["replays"] == []
    assert flow["url"] == "/flows/4711"


def test_a_flow_reads_the_same_as_drf_would_serialize_its_declared_fields(
    orders: dict[str, str],
) -> None:
    """FlowSerializer builds its answer by hand (for speed): it must match the fields it declares."""
    flows = FlowInstance.objects.select_related("definition").order_by("correlation_id")
    assert len(flows) == 3 and any(flow.completed_at is None for flow in flows)
    for flow in flows:
        serializer = FlowSerializer(flow)
        by_hand = serializer.data
        by_drf = serializers.ModelSerializer.to_representation(serializer, flow)
        assert by_hand == by_drf
        assert list(by_hand) == FlowSerializer.Meta.fields


def test_an_unknown_flow_is_a_404_that_says_so(client_as: Callable[[Role | None], Client]) -> None:
    response = client_as(Role.SUPPORT).get("/api/v1/flows/nope")
    assert response.status_code == 404
    assert "No flow has the correlation ID 'nope'" in response.json()["detail"]


def test_flows_are_listed_by_status_definition_and_system_with_a_count(
    client_as: Callable[[Role | None], Client], orders: dict[str, str]
) -> None:
    client = client_as(Role.SUPPORT)
    everything = client.get("/api/v1/flows").json()
    assert everything["count"] == 3
    failed = client.get("/api/v1/flows?status=failed&definition=order-to-invoice").json()
    assert [flow["correlation_id"] for flow in failed["results"]] == ["4711"]
    at_fin = client.get("/api/v1/flows?system=FIN").json()
    assert {flow["correlation_id"] for flow in at_fin["results"]} == {"4712", "4713"}
    recent = client.get("/api/v1/flows", {"since": (NOW + timedelta(hours=1)).isoformat()}).json()
    assert recent["count"] == 0
    refused = client.get("/api/v1/flows?status=lost")
    assert refused.status_code == 400 and "status" in refused.json()


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("4711", ["4711"]),  # correlation ID (also the order business key)
        ("SHP-1", ["4713"]),  # shipment number
        ("msg-ship-4713", ["4713"]),  # a record's message ID
        ("INV-77", ["4712", "4713"]),  # a key two flows share
    ],
)
def test_search_finds_flows_by_what_support_knows(
    client_as: Callable[[Role | None], Client], orders: dict[str, str], query: str, found: list[str]
) -> None:
    answer = client_as(Role.SUPPORT).get("/api/v1/search", {"q": query}).json()
    assert sorted(flow["correlation_id"] for flow in answer["flows"]) == found
    assert answer["count"] == len(found)


def test_search_by_trace_and_span_id(
    client_as: Callable[[Role | None], Client], orders: dict[str, str]
) -> None:
    client = client_as(Role.SUPPORT)
    by_trace = client.get("/api/v1/search", {"q": orders["4712"].upper()}).json()
    assert [flow["correlation_id"] for flow in by_trace["flows"]] == ["4712"]
    assert by_trace["flows"][0]["matched_by"] == "trace ID"
    span_id = client.get("/api/v1/flows/4713").json()["spans"][0]["span_id"]
    by_span = client.get("/api/v1/search", {"q": span_id}).json()
    assert [flow["correlation_id"] for flow in by_span["flows"]] == ["4713"]


def test_search_that_finds_nothing_says_what_it_searched(
    client_as: Callable[[Role | None], Client], orders: dict[str, str]
) -> None:
    client = client_as(Role.SUPPORT)
    answer = client.get("/api/v1/search", {"q": "9999"}).json()
    assert answer["flows"] == []
    assert answer["searched"] == ["correlation IDs", "business keys", "message IDs"]
    page = client.get("/search/", {"q": "9999"})
    assert "No flow, record or trace matches <strong>9999</strong>" in page.content.decode()
    assert client.get("/api/v1/search").status_code == 400


def test_the_search_page_goes_straight_to_the_one_flow_and_lists_several(
    client_as: Callable[[Role | None], Client], orders: dict[str, str]
) -> None:
    client = client_as(Role.SUPPORT)
    one = client.get("/search/", {"q": "SHP-1"})
    assert one.status_code == 302 and one["Location"] == "/flows/4713"
    several = client.get("/search/", {"q": "INV-77"}).content.decode()
    assert 'href="/flows/4712"' in several and 'href="/flows/4713"' in several
    assert "2 flows match" in several
    # As you type: the fragment only, and no redirect even for one flow.
    typed = client.get("/search/", {"q": "SHP-1"}, HTTP_HX_REQUEST="true")
    assert typed.status_code == 200 and "<html" not in typed.content.decode()
    assert 'href="/flows/4713"' in typed.content.decode()


def test_a_search_term_is_escaped(client_as: Callable[[Role | None], Client]) -> None:
    page = (
        client_as(Role.SUPPORT).get("/search/", {"q": "<script>alert(1)</script>"}).content.decode()
    )
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def seed_many(flows: int, spans_per_flow: int) -> None:
    """Tens of thousands of spans and records, written the way ingest writes them."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO ingest_resource (digest, service_name, attributes)
            VALUES ('\\x00', 'ERP', '{}') ON CONFLICT DO NOTHING
            """
        )
        cursor.execute("SELECT id FROM ingest_resource WHERE digest = '\\x00'")
        resource = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO ingest_span (trace_id, span_id, name, kind, start_time, end_time, duration_ns,
                status_code, status_message, service_name, resource_id, scope_name, attributes, events,
                links, correlation_id, message_id, business_keys, sender, received_at)
            SELECT decode(md5('t' || f), 'hex'), decode(substr(md5('s' || f || '.' || s), 1, 16), 'hex'),
                   'order.step', 1, now() - interval '1 hour', now() - interval '1 hour', 0, 0, '', 'ERP',
                   %s, 't', '{}', '[]', '[]', 'seed-' || f, 'msg-' || f || '-' || s,
                   jsonb_build_object('order', 'seed-' || f), 'runtime', now()
            FROM generate_series(1, %s) f, generate_series(1, %s) s
            """,
            [resource, flows, spans_per_flow],
        )
        cursor.execute(
            """
            INSERT INTO ingest_record (id, sender, record_id, occurred_at, system, step, event, message_id,
                correlation_id, trace_id, business_keys, content_type, headers, error, source, raw_body_id,
                raw_position, received_at)
            SELECT f, 'runtime', 'seed-' || f, now() - interval '1 hour', 'WMS', 'stock.reserve', 'delivered',
                   'rmsg-' || f, 'seed-' || f, decode(md5('t' || f), 'hex'), '{}', '', '{}', '', 'seed',
                   '\\x00', 0, now()
            FROM generate_series(1, %s) f
            """,
            [flows * 2],
        )
        cursor.execute("ANALYZE ingest_span; ANALYZE ingest_record")


def sequential_reads(query: str) -> list[str]:
    """The span and record tables the search read row by row (empty partitions aside)."""
    reads: list[str] = []

    def explain(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                reads.extend(_seq_scans_with_rows(plan[0]["Plan"]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        flows_search(query)
    return reads


def _seq_scans_with_rows(node: dict[str, Any]) -> list[str]:
    found = []
    relation = node.get("Relation Name", "")
    read = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
    if (
        node["Node Type"] == "Seq Scan"
        and relation.startswith(("ingest_span", "ingest_record"))
        and read
    ):
        found.append(f"{relation}: {read} rows")
    for child in node.get("Plans", []):
        found += _seq_scans_with_rows(child)
    return found


@pytest.mark.parametrize("query", ["seed-1234", "msg-77-3", "rmsg-99", "0" * 32, new_trace()[:16]])
def test_no_search_reads_spans_or_records_sequentially(orders: dict[str, str], query: str) -> None:
    seed_many(flows=4000, spans_per_flow=10)
    assert sequential_reads(query) == []
