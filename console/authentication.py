"""Telling tokens apart: personal tokens for people, ingest tokens for senders."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from console.access import roles_remember
from console.models import ApiToken, IngestToken
from console.selectors import api_token_find, ingest_token_find
from console.services import API_TOKEN_KIND, INGEST_TOKEN_KIND, token_mark_used


class PersonalTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <personal token>` on /api/v1/."""

    keyword = "Token"

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if secret.startswith(INGEST_TOKEN_KIND):
            raise AuthenticationFailed(
                "That is an ingest token, made for /v1/traces and /ingest/v1/. "
                "The API takes a personal token as 'Authorization: Token <token>'."
            )
        if scheme.lower() != "token":
            return None
        token = api_token_find(secret)
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("Unknown or revoked token.")
        roles_remember(token.user, token.group_names)  # type: ignore[attr-defined]
        token_mark_used(token, now=timezone.now())
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class IngestAuthError(Exception):
    """The request carries no usable ingest token; the message says what was wrong."""


def ingest_token_from(request: HttpRequest) -> IngestToken:
    """The sender's token from `Authorization: Bearer <ingest token>`, or IngestAuthError."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if not header:
        raise IngestAuthError("Missing 'Authorization: Bearer <ingest token>'.")
    if scheme.lower() != "bearer":
        raise IngestAuthError("Ingest takes 'Authorization: Bearer <ingest token>'.")
    if secret.startswith(API_TOKEN_KIND):
        raise IngestAuthError("That is a personal API token; ingest needs an ingest token.")
    token = ingest_token_find(secret)
    if token is None:
        raise IngestAuthError("Unknown or revoked ingest token.")
    token_mark_used(token, now=timezone.now())
    return token


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes personal tokens."""

    target_class = PersonalTokenAuthentication
    name = "personalToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <personal token>`, made under API tokens or with `manage.py api_token create`.",
        }
