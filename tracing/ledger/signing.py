"""The installation's signing key: TIDELINE_SIGNING_KEY, or in try-out mode one made once.

The key's name is the log's origin, `<host>/tideline/<install id>`, so a checkpoint names
the log it belongs to and a key from another installation cannot pass for this one's.
"""

from __future__ import annotations

import secrets
import socket
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from console.embedded import try_out
from console.env import secret_kept
from tracing.ledger.note import NoteError, SigningKey, signing_key_generate, signing_key_parse


@cache
def _key_from(text: str) -> SigningKey:
    try:
        return signing_key_parse(text)
    except NoteError as error:
        raise ImproperlyConfigured(f"TIDELINE_SIGNING_KEY: {error}") from None


def signing_key() -> SigningKey:
    configured = settings.TIDELINE_SIGNING_KEY
    if configured:
        return _key_from(configured)
    if not try_out():
        raise ImproperlyConfigured(
            "TIDELINE_SIGNING_KEY is not set: checkpoints cannot be signed. Make one with "
            "`python manage.py ledger keygen` and keep it like a password."
        )
    keyfile = settings.TIDELINE_HOME / "signing_key"
    return _key_from(secret_kept(keyfile, lambda: signing_key_generate(origin_new()).text()))


def origin_new(host: str | None = None) -> str:
    """A fresh origin: this host's name and a new install id."""
    return f"{host or socket.gethostname()}/tideline/{secrets.token_hex(8)}"
