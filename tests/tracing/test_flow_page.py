"""The flow page as support and operators see it: the sentence, the owner, the questions per
message, the steps, the timeline, the waterfalls, masked payloads and the journal."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from console.access import Role
from console.models import JournalEntry
from tests.tracing.seafood import Runtime, definitions_load, new_trace
from tracing.flows.masking import MASK, json_mask, path_parse
from tracing.flows.models import System
from tracing.flows.services.summary import flows_summarize

pytestmark = pytest.mark.django_db
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=6)
ClientAs = Callable[[Role | None], Client]
POLL = {"HX-Request": "true", "HX-Target": "flow"}  # what the page's own polling sends
ORDER = {
    "order": "4711",
    "customer": {"name": "Kari Nordmann", "email": "kari.nordmann@example.no"},
    "lines": [{"sku": "SALMON-4KG", "qty": 40}],
}
CERTIFICATE = '<certificate batch="B-88"><inspector>Ola Hansen</inspector></certificate>'


@pytest.fixture
def runtime() -> Runtime:
    definitions_load()
    return Runtime.connected()


@pytest.fixture
def failed_order(runtime: Runtime) -> str:
    """Order 4711: its certificate message to QMS is dead-lettered after five attempts."""
    trace = runtime.order("4711", T0, until="production.notify")
    runtime.record(
        "ERP", "order.receive", "received", T0 + timedelta(seconds=5), correlation="4711",
        message_id="msg-order-4711", payload=json.dumps(ORDER), content_type="application/json",
    )  # fmt: skip
    runtime.record(
        "QMS", "certificate.approve", "received", T0 + timedelta(minutes=35), correlation="4711",
        message_id="msg-cert-4711", payload=CERTIFICATE, content_type="application/xml",
        trace_id=trace,
    )  # fmt: skip
    runtime.send()
    runtime.dead_letter(
        "QMS", T0 + timedelta(minutes=40), correlation="4711", message_id="msg-cert-4711"
    )
    flows_summarize(now=NOW)
    return "4711"


def test_support_sees_where_order_4711_stopped_and_who_owns_it(
    failed_order: str, client_as: ClientAs
) -> None:
    response = client_as(Role.SUPPORT).get("/flows/4711")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Stopped at <strong>Certificate approved</strong> (QMS): the message to QMS" in page
    assert "HTTP 503 from QMS" in page
    assert "Owner of QMS: <strong>Quality</strong>" in page
    assert 'href="mailto:quality@seafood.example"' in page
    assert 'href="https://wiki.seafood.example/runbooks/qms"' in page
    assert 'class="step state-failed stopped" aria-current="step"' in page
    assert page.count('class="step state-done') == 3
    assert "No alert has covered this flow." in page  # alerts' own test shows one that did


def test_each_message_answers_supports_questions(failed_order: str, client_as: ClientAs) -> None:
    page = client_as(Role.SUPPORT).get("/flows/4711").content.decode()
    certificate = page[
        page.index("msg-cert-4711") : page.index("</article>", page.index("msg-cert-4711"))
    ]
    assert "Was the target available?</dt>" in certificate
    assert '<span class="visually-hidden">no:</span> dead-lettered by QMS at' in certificate
    assert "5 attempts" in certificate
    assert certificate.count("unknown: no record of this step") >= 3  # valid, transformed, alerted
    assert "not checked yet: a replay request or dry run checks it" in certificate
    assert 'href="#dead-letter-' in certificate


def test_payloads_are_masked_for_support(failed_order: str, client_as: ClientAs) -> None:
    page = client_as(Role.SUPPORT).get("/flows/4711").content.decode()
    assert "kari.nordmann@example.no" not in page
    assert "Kari Nordmann" not in page
    assert f"&quot;email&quot;: &quot;{MASK}&quot;" in page
    assert "SALMON-4KG" in page  # what is not personal stays readable
    assert "Ola Hansen" not in page and "certificate batch" not in page
    assert "application/xml payload of 73 bytes, masked whole for your role" in page
    assert not JournalEntry.objects.filter(action="payload.view_unmasked").exists()


def test_an_operator_sees_payloads_as_sent_journaled_once_an_hour(
    failed_order: str, client_as: ClientAs
) -> None:
    operator = client_as(Role.OPERATOR)
    page = operator.get("/flows/4711").content.decode()
    assert "kari.nordmann@example.no" in page
    assert "&lt;inspector&gt;Ola Hansen&lt;/inspector&gt;" in page
    operator.get("/flows/4711")
    views = JournalEntry.objects.filter(action="payload.view_unmasked", subject="flow:4711")
    assert list(views.values_list("actor", flat=True)) == ["bob"]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=61)):
        operator.get("/flows/4711")
    assert views.count() == 2


def test_a_payload_with_a_script_is_escaped(runtime: Runtime, client_as: ClientAs) -> None:
    runtime.order("4720", T0, until="stock.reserve")
    runtime.record(
        "WMS", "stock.reserve", "failed", T0 + timedelta(minutes=12), correlation="4720",
        payload="<script>alert('owned')</script>", content_type="text/plain",
        error="<script>alert('error')</script>",
    )  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    page = client_as(Role.OPERATOR).get("/flows/4720").content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;error&#x27;)&lt;/script&gt;" in page


def test_a_runbook_that_is_not_a_web_address_is_never_a_link(
    failed_order: str, client_as: ClientAs
) -> None:
    System.objects.filter(name="QMS").update(runbook_url="javascript:alert(1)")
    page = client_as(Role.SUPPORT).get("/flows/4711").content.decode()
    assert 'href="javascript:' not in page
    assert "runbook javascript:alert(1)" in page


def test_an_unknown_correlation_id_is_a_404_saying_no_flow_matches(client_as: ClientAs) -> None:
    response = client_as(Role.SUPPORT).get("/flows/<b>9999</b>")
    assert response.status_code == 404
    page = response.content.decode()
    assert "No flow matches <code>&lt;b&gt;9999&lt;/b&gt;</code>" in page


def test_an_in_progress_flow_polls_and_a_completed_one_stops_polling(
    runtime: Runtime, client_as: ClientAs
) -> None:
    runtime.order("4712", NOW - timedelta(minutes=12), until="stock.reserve")
    runtime.order("4713", T0, until="invoice.basis")
    runtime.send()
    flows_summarize(now=NOW)
    support = client_as(Role.SUPPORT)

    running = support.get("/flows/4712", headers=POLL)
    assert running.status_code == 200
    partial = running.content.decode()
    assert partial.lstrip().startswith('<div id="flow"')
    assert 'hx-trigger="every 5s"' in partial and "<html" not in partial
    version = partial.split("?version=", 1)[1].split('"', 1)[0]
    unchanged = support.get(f"/flows/4712?version={version}", headers=POLL)
    assert unchanged.status_code == 204

    completed = support.get("/flows/4713", headers=POLL)
    assert completed.status_code == 286
    assert "Completed at" in completed.content.decode()
    assert "hx-trigger" not in completed.content.decode()
    assert "every 5s" not in support.get("/flows/4713").content.decode()
    # Another htmx request (a boosted link) is a page visit: the whole page, not the partial.
    boosted = support.get("/flows/4712", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert boosted.status_code == 200 and "<html" in boosted.content.decode()


def test_the_payload_schema_answers_valid_without_showing_the_value(
    runtime: Runtime, client_as: ClientAs
) -> None:
    runtime.order("4714", T0, until="shipment.book")
    runtime.record(
        "FIN", "invoice.basis", "delivered", T0 + timedelta(minutes=60), correlation="4714",
        message_id="msg-invoice-4714", content_type="application/json",
        payload=json.dumps({"order": "4714", "amount": 1200, "currency": "nok"}),
    )  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    page = client_as(Role.SUPPORT).get("/flows/4714").content.decode()
    assert "the payload breaks the schema of Invoice basis sent: currency fails “pattern”" in page


def test_a_message_validated_then_failing_its_mapping_says_so(
    runtime: Runtime, client_as: ClientAs
) -> None:
    runtime.order("4715", T0, until="order.create")
    runtime.record(
        "ERP", "order.validate", "validated", T0 + timedelta(minutes=1), correlation="4715",
        message_id="msg-order-4715",
    )  # fmt: skip
    runtime.record(
        "ERP", "order.map", "failed", T0 + timedelta(minutes=2), correlation="4715",
        message_id="msg-order-4715", error="no mapping for unit KGM",
    )  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    page = client_as(Role.SUPPORT).get("/flows/4715").content.decode()
    message = page[page.index("msg-order-4715") :]
    assert '<span class="visually-hidden">yes:</span> order.validate validated in ERP' in message
    assert '<span class="visually-hidden">no:</span> order.map failed in ERP at ' in message
    assert "no mapping for unit KGM" in message


def test_the_waterfall_nests_spans_and_marks_errors_and_clock_skew(
    runtime: Runtime, client_as: ClientAs
) -> None:
    trace = new_trace()
    root = runtime.span(
        "ERP", "order.create", T0 + timedelta(seconds=2), trace=trace, correlation="4715"
    )
    runtime.span("WMS", "stock.reserve.call", T0, trace=trace, parent=root, error="HTTP 503",
                 attributes={"http.response.status_code": 503})  # fmt: skip
    runtime.send()
    flows_summarize(now=NOW)
    page = client_as(Role.SUPPORT).get("/flows/4715").content.decode()
    root_row, child_row = page.index(f"span-{trace}-{root}"), page.index('style="--depth: 1"')
    assert root_row < child_row
    assert '<span class="flag error">error</span> HTTP 503' in page
    assert ">clock skew</span>" in page
    assert page.count('class="lane"') == 2  # ERP and WMS on one axis
    assert f'href="#span-{trace}-{root}"' in page


@pytest.mark.parametrize("role", list(Role))
def test_every_role_may_view_a_flow(failed_order: str, client_as: ClientAs, role: Role) -> None:
    assert client_as(role).get("/flows/4711").status_code == 200


def test_anonymous_is_sent_to_sign_in(failed_order: str, client_as: ClientAs) -> None:
    response = client_as(None).get("/flows/4711")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize(
    ("path", "masked"),
    [
        ("customer.email", {"customer": {"email": MASK, "name": "K"}, "email": "top@x"}),
        ("*.email", {"customer": {"email": MASK, "name": "K"}, "email": "top@x"}),
        ("**.email", {"customer": {"email": MASK, "name": "K"}, "email": MASK}),
        ("customer", {"customer": {"email": MASK, "name": MASK}, "email": "top@x"}),
        ("lines[*].price", {"lines": [{"price": MASK, "sku": "A"}, {"price": MASK, "sku": "B"}]}),
    ],
)
def test_json_paths_mask_only_what_they_name(path: str, masked: dict[str, object]) -> None:
    document: dict[str, object] = {"customer": {"email": "k@x", "name": "K"}, "email": "top@x"}
    if path.startswith("lines"):
        document = {"lines": [{"price": 10, "sku": "A"}, {"price": 12, "sku": "B"}]}
    assert json_mask(document, [path_parse(path)]) == masked
