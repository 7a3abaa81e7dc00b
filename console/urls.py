from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console import api, dashboard, views

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("search/", views.search, name="search"),
    path("account/api-tokens/", views.api_tokens, name="api-tokens"),
    path(
        "account/api-tokens/<int:token_id>/revoke",
        views.api_token_revoke_view,
        name="api-token-revoke",
    ),
    path("settings/ingest-tokens/", views.ingest_tokens, name="ingest-tokens"),
    path(
        "settings/ingest-tokens/<int:token_id>/revoke",
        views.ingest_token_revoke_view,
        name="ingest-token-revoke",
    ),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/me", api.MeView.as_view(), name="api-me"),
    path("admin/", admin.site.urls),
    path("", include("tracing.ingest.urls")),
    path("", include("tracing.flows.urls")),
    path("", include("tracing.alerts.urls")),
    path("", include("tracing.ledger.urls")),
    path("", include("replay.urls")),
    path("", include("replay.page_urls")),
]

handler400 = "console.errors.bad_request"
handler403 = "console.errors.forbidden"
handler404 = "console.errors.not_found"
handler500 = "console.errors.server_error"
