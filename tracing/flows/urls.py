from __future__ import annotations

from django.urls import path

from tracing.flows import api

urlpatterns = [
    path("api/v1/flow-definitions", api.FlowDefinitionList.as_view(), name="api-flow-definitions"),
]
