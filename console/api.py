"""The console's own API endpoints and the error shape every API answer shares."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from console.access import capabilities_of, roles_of

log = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's answers for the errors it knows; a plain 500 with the request ID for the rest."""
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    request = context.get("request")
    request_id = getattr(getattr(request, "_request", None), "request_id", "")
    log.exception("api error", extra={"request_id": request_id})
    return Response(
        {
            "detail": "Tideline could not answer this request; it has been logged.",
            "request_id": request_id,
        },
        status=500,
    )


class MeView(APIView):
    """Who the caller is and what their role allows: a quick check that a token works."""

    @extend_schema(
        responses=inline_serializer(
            "Me",
            {
                "username": serializers.CharField(),
                "roles": serializers.ListField(child=serializers.CharField()),
                "capabilities": serializers.ListField(child=serializers.CharField()),
                "token": serializers.CharField(allow_null=True),
            },
        )
    )
    def get(self, request: Request) -> Response:
        token = request.auth
        return Response(
            {
                "username": request.user.get_username(),
                "roles": sorted(roles_of(request.user)),
                "capabilities": sorted(capabilities_of(request.user)),
                "token": getattr(token, "name", None),
            }
        )
