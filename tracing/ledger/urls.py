from __future__ import annotations

from django.urls import path

from tracing.ledger import api, views

urlpatterns = [
    path("api/v1/ledger/checkpoint", api.CheckpointView.as_view(), name="api-ledger-checkpoint"),
    path(
        "api/v1/ledger/proof/inclusion",
        api.InclusionProofView.as_view(),
        name="api-ledger-inclusion",
    ),
    path(
        "api/v1/ledger/proof/consistency",
        api.ConsistencyProofView.as_view(),
        name="api-ledger-consistency",
    ),
    path("api/v1/ledger/public-key", api.PublicKeyView.as_view(), name="api-ledger-public-key"),
    path("ledger/", views.ledger_page, name="ledger"),
    path("ledger/exports", views.ledger_export_new, name="ledger-export-new"),
    path(
        "ledger/exports/<int:job_id>/bundle.zip",
        views.ledger_export_download,
        name="ledger-export-download",
    ),
]
