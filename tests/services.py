"""pytest plugin (loaded with -p, before Django): the services the suite runs against.

DATABASE_URL and REDIS_URL when set (CI sets them to the machine's PostgreSQL and Redis);
otherwise the embedded servers of try-out mode, in their own home (.tideline/test) so a
test run never touches the data of a running `make run`.
"""

from __future__ import annotations

import os
from pathlib import Path

from console.embedded import BASE_DIR, provide_services, stop_services

TEST_HOME = Path(os.environ.get("TIDELINE_TEST_HOME", BASE_DIR / ".tideline" / "test"))
os.environ.setdefault("TIDELINE_HOME", str(TEST_HOME))
# One superuser role: the suite creates its test database and empties append-only tables
# between tests; tests/tracing/ledger/test_roles.py checks the application's own role.
provide_services(allow_embedded=True, home=TEST_HOME, separate_roles=False)


def pytest_report_header() -> list[str]:
    embedded = os.environ.get("TIDELINE_EMBEDDED")
    return [
        f"tideline services: {'embedded ' + embedded if embedded else 'DATABASE_URL and REDIS_URL'}"
    ]


def pytest_unconfigure() -> None:
    stop_services(TEST_HOME)
