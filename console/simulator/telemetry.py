"""The company's systems as OpenTelemetry services: one TracerProvider per system, each with
its own `service.name`, exporting through the real OTLP/HTTP exporter to Tideline.

Hops carry W3C `traceparent` and `baggage` (the correlation ID) in message headers, injected
and extracted by the SDK's propagators, as an instrumented runtime would. A synchronous call
continues the trace; an asynchronous hop (a queue, a batch) starts a new trace with a span
link to the span that sent it. Every span gets explicit start and end times, so a history
can be backdated while Tideline keeps the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICES = ("ERP", "WMS", "MES", "QMS", "TMS", "FIN")
CORRELATION = "correlation.id"
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
# A backfilled weekend makes tens of thousands of spans in seconds: the queue holds them all
# rather than dropping any, and the exporter waits for a busy Tideline (429/503) to take them.
QUEUE_SIZE = 500_000
EXPORT_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Hop:
    """A span that was made, as the next hop sees it: the headers it sent, and its IDs."""

    carrier: dict[str, str]
    trace_id: str
    span_id: str


def _nanos(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000) * 1000


class SpansRefused(Exception):
    """Tideline did not take a batch of the history's spans, even after the exporter's retries."""


class _Gate(SpanProcessor):
    """Passes ended spans to the batch processor, or holds them while the history is made."""

    def __init__(self, services: Services, processor: BatchSpanProcessor) -> None:
        self.services, self.processor = services, processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.services.held is not None:
            self.services.held.append(span)
        else:
            self.processor.on_end(span)

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.processor.force_flush(timeout_millis)


class Services:
    """The six systems' tracer providers, exporting to one Tideline with one ingest token."""

    def __init__(self, *, url: str, token: str) -> None:
        self.spans_made = 0
        self.held: list[ReadableSpan] | None = None
        self.providers: dict[str, TracerProvider] = {}
        self.exporter = self._exporter(url, token)  # the history's, sent in an order of its own
        for name in SERVICES:
            provider = TracerProvider(
                resource=Resource.create({"service.name": name, "service.namespace": "seafood"})
            )
            processor = BatchSpanProcessor(
                self._exporter(url, token),
                max_queue_size=QUEUE_SIZE,
                schedule_delay_millis=500,
                max_export_batch_size=512,
            )
            provider.add_span_processor(_Gate(self, processor))
            self.providers[name] = provider
        self.tracers = {
            name: p.get_tracer("tideline.simulator") for name, p in self.providers.items()
        }

    @staticmethod
    def _exporter(url: str, token: str) -> OTLPSpanExporter:
        return OTLPSpanExporter(
            endpoint=f"{url.rstrip('/')}/v1/traces",
            headers={"Authorization": f"Bearer {token}"},
            timeout=EXPORT_TIMEOUT_SECONDS,
        )

    def hold(self) -> None:
        """Keep the spans that end from now on until `take`, instead of exporting them."""
        self.held = []

    def take(self) -> list[ReadableSpan]:
        taken, self.held = self.held or [], None
        return taken

    def export(self, spans: list[ReadableSpan]) -> None:
        """Export held spans of any of the services in one OTLP request (retried by the exporter)."""
        if self.exporter.export(spans) is not SpanExportResult.SUCCESS:
            raise SpansRefused(f"Tideline did not take {len(spans)} spans of the history")

    def span(
        self,
        service: str,
        name: str,
        *,
        at: datetime,
        took: timedelta,
        parent: Hop | None = None,
        linked: tuple[Hop, ...] = (),
        correlation: str | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, str | int] | None = None,
        error: str = "",
    ) -> Hop:
        """One span of `service`: a child of `parent`, or a new trace linked to `linked`."""
        context = _context(parent, linked, correlation)
        correlation = correlation or _text(baggage.get_baggage(CORRELATION, context))
        values: dict[str, str | int] = dict(attributes or {})
        if correlation:
            values[CORRELATION] = correlation
        links = [Link(trace.get_current_span(_extract(hop)).get_span_context()) for hop in linked]
        tracer = self.tracers[service]
        span = tracer.start_span(
            name,
            context=context,
            kind=kind,
            attributes=values,
            links=links,
            start_time=_nanos(at),
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_nanos(at + took))
        self.spans_made += 1
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, context))
        ids = span.get_span_context()
        return Hop(carrier=carrier, trace_id=f"{ids.trace_id:032x}", span_id=f"{ids.span_id:016x}")

    def flush(self) -> None:
        for provider in self.providers.values():
            provider.force_flush(timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()
        self.exporter.shutdown()


def _extract(hop: Hop) -> Context:
    return PROPAGATOR.extract(hop.carrier, context=Context())


def _context(parent: Hop | None, linked: tuple[Hop, ...], correlation: str | None) -> Context:
    """The parent's context (trace and baggage), or a fresh trace that keeps the baggage of
    the hop it is linked to: the correlation ID travels across an async hop in baggage."""
    if parent is not None:
        context = _extract(parent)
    else:
        context = Context()
        if linked:
            for key, value in baggage.get_all(_extract(linked[0])).items():
                context = baggage.set_baggage(key, value, context)
    if correlation:
        context = baggage.set_baggage(CORRELATION, correlation, context)
    return context


def _text(value: object) -> str | None:
    return str(value) if value else None
