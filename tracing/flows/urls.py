from __future__ import annotations

from django.urls import path

from tracing.flows import api, definition_pages, views

urlpatterns = [
    path("flows/<path:correlation_id>", views.flow_page, name="flow"),
    path("settings/flow-definitions/", definition_pages.flow_definitions, name="flow-definitions"),
    path(
        "settings/flow-definitions/flows.yaml",
        definition_pages.flow_definitions_download,
        name="flow-definitions-download",
    ),
    path("api/v1/flow-definitions", api.FlowDefinitionList.as_view(), name="api-flow-definitions"),
    path("api/v1/flows", api.FlowList.as_view(), name="api-flows"),
    path("api/v1/flows/<path:correlation_id>", api.FlowDetail.as_view(), name="api-flow"),
    path("api/v1/search", api.Search.as_view(), name="api-search"),
]
