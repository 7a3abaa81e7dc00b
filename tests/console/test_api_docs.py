"""The API is described by OpenAPI 3, and its docs page loads nothing from other hosts."""

from __future__ import annotations

import re

import pytest

from console.access import Role

pytestmark = pytest.mark.django_db


def test_the_schema_describes_the_personal_token(client_as) -> None:
    schema = client_as(Role.SUPPORT).get("/api/schema/", {"format": "json"}).json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/me" in schema["paths"]
    assert schema["components"]["securitySchemes"]["personalToken"]["name"] == "Authorization"


def test_the_docs_page_is_served_from_our_own_static_files(client_as) -> None:
    page = client_as(Role.SUPPORT).get("/api/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui" in asset for asset in assets)
    assert all(asset.startswith("/") for asset in assets), assets
    assert "cdn" not in page.lower()
