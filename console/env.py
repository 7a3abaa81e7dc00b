"""Typed readers for settings that come from the environment.

Each raises ImproperlyConfigured naming the variable, so a bad value stops start-up with
one line a person can act on instead of a stack trace deep inside Django.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, *, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}"
    )


def env_int(name: str, *, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    return value


def env_float(name: str, *, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {value}")
    return value


def env_str(name: str, *, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_list(name: str, *, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_path(name: str, *, default: Path) -> Path:
    raw = os.environ.get(name)
    return Path(raw).expanduser().resolve() if raw else default


def database_from_url(name: str, url: str) -> dict[str, Any]:
    """Django DATABASES entry for a postgresql:// URL (a unix socket goes in ?host=)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"{name} must be a postgresql:// URL, e.g. postgresql://tideline@127.0.0.1:5432/tideline;"
            f" got scheme {parts.scheme or '(none)'!r}"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ImproperlyConfigured(f"{name} must name a database, e.g. postgresql://host/tideline")
    query = parse_qs(parts.query)
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a port that is not a number") from None
    host = query.pop("host", [parts.hostname or ""])[0]
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": {key: values[0] for key, values in query.items()},
    }


def redis_url_checked(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss", "redis+socket"}:
        raise ImproperlyConfigured(
            f"{name} must be a redis://, rediss:// or redis+socket:// URL; got scheme {scheme!r}"
        )
    return url


def email_from_env() -> dict[str, Any]:
    """Django's EMAIL_* settings for alert e-mail, from EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
    EMAIL_HOST_PASSWORD, EMAIL_USE_TLS, EMAIL_USE_SSL, EMAIL_TIMEOUT and EMAIL_FROM."""
    use_tls = env_bool("EMAIL_USE_TLS", default=False)
    use_ssl = env_bool("EMAIL_USE_SSL", default=False)
    if use_tls and use_ssl:
        raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on")
    return {
        "EMAIL_BACKEND": env_str(
            "EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend"
        ),
        "EMAIL_HOST": env_str("EMAIL_HOST", default="localhost"),
        "EMAIL_PORT": env_int("EMAIL_PORT", default=25, minimum=1),
        "EMAIL_HOST_USER": env_str("EMAIL_HOST_USER"),
        "EMAIL_HOST_PASSWORD": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "EMAIL_USE_TLS": use_tls,
        "EMAIL_USE_SSL": use_ssl,
        "EMAIL_TIMEOUT": env_int("EMAIL_TIMEOUT", default=10, minimum=1),
        "DEFAULT_FROM_EMAIL": env_str("EMAIL_FROM", default="tideline@localhost"),
    }


def secret_kept(path: Path, make: Callable[[], str]) -> str:
    """A secret made once and kept in a private file (try-out mode's secret and signing keys).

    Written to a temporary file and linked into place: no process reads it half-written, and
    processes starting together keep the first one made (two keys would invalidate sessions
    or leave checkpoints that no longer verify)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w") as handle:  # mkstemp: readable by its owner only
                handle.write(make() + "\n")
            with contextlib.suppress(FileExistsError):  # another process's secret is the one
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return path.read_text().strip()
