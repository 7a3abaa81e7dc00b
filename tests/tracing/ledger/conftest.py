from __future__ import annotations

import pytest
from django.test import Client

from console.services import ingest_token_create
from tracing.ledger.note import signing_key_generate

SIGNING_KEY = signing_key_generate("ledger.test/tideline/0123456789abcdef")


@pytest.fixture(autouse=True)
def signing_key(settings):
    settings.TIDELINE_SIGNING_KEY = SIGNING_KEY.text()
    return SIGNING_KEY


@pytest.fixture
def runtime(db: None) -> Client:
    token = ingest_token_create(sender="runtime-prod", systems=[], actor="test").secret
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}")
