from __future__ import annotations

from django.urls import path

from tracing.ingest import views

urlpatterns = [
    path("v1/traces", views.otlp_traces, name="otlp-traces"),
    path("ingest/v1/records", views.audit_records, name="ingest-records"),
    path("ingest/v1/dead-letters", views.dead_letters, name="ingest-dead-letters"),
]
