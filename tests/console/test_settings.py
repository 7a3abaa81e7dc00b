"""Settings come from the environment; a bad value stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from console.env import database_from_url, env_bool, env_int, redis_url_checked, secret_kept

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_malformed_database_url_is_named_in_one_line() -> None:
    result = manage("check", DATABASE_URL="mysql://root@localhost/tideline")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Tideline cannot start: DATABASE_URL must be a postgresql:// URL, e.g. "
        "postgresql://tideline@127.0.0.1:5432/tideline; got scheme 'mysql'"
    ]


def test_a_bad_flag_value_names_the_variable() -> None:
    result = manage("check", TIDELINE_HTTPS="perhaps")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "TIDELINE_HTTPS must be one of" in result.stderr


def test_check_deploy_is_clean_with_https() -> None:
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        TIDELINE_HTTPS="1",
        SECRET_KEY="k" * 20 + "-deploy-check-secret-key-with-enough-characters",
        DEBUG="0",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://tideline:s%40cret@db.internal:6432/prod",
            ("prod", "tideline", "s@cret", "db.internal", "6432"),
        ),
        (
            "postgresql://postgres@/tideline?host=/run/pg",
            ("tideline", "postgres", "", "/run/pg", ""),
        ),
    ],
)
def test_database_urls_become_django_settings(url: str, expected: tuple[str, ...]) -> None:
    settings = database_from_url("DATABASE_URL", url)
    assert tuple(settings[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: database_from_url("DATABASE_URL", "postgresql://db.internal"),
            "DATABASE_URL must name a database",
        ),
        (
            lambda: database_from_url("DATABASE_URL", "postgresql://db:port/x"),
            "DATABASE_URL has a port that is not a number",
        ),
        (lambda: redis_url_checked("REDIS_URL", "http://cache"), "REDIS_URL must be a redis://"),
    ],
)
def test_bad_urls_are_refused_by_name(call, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        call()


def test_typed_helpers_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDELINE_LOGIN_FAILURE_LIMIT", "five")
    with pytest.raises(
        ImproperlyConfigured, match="TIDELINE_LOGIN_FAILURE_LIMIT must be an integer"
    ):
        env_int("TIDELINE_LOGIN_FAILURE_LIMIT", default=5)
    monkeypatch.setenv("DEBUG", "TRUE")
    assert env_bool("DEBUG") is True
    monkeypatch.delenv("DEBUG")
    assert env_bool("DEBUG") is False


def test_a_try_out_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    keyfile = tmp_path / "home" / "signing_key"

    first = secret_kept(keyfile, lambda: "the first key")
    again = secret_kept(keyfile, lambda: "a second key")

    assert first == again == "the first key"  # a restart signs with the same key
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    assert [path.name for path in keyfile.parent.iterdir()] == ["signing_key"]
