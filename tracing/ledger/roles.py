"""The two database roles: the owner that migrates, and the application that may not rewrite.

Migrations run as the owner (TIDELINE_MIGRATE_DATABASE_URL, see console's `migrate`);
afterwards the role of DATABASE_URL gets what the application needs and no more: SELECT and
INSERT on the append-only tables (so it can neither change them nor switch their triggers
off, which only an owner or superuser may), the usual rights elsewhere, and the partitioned
span and record tables as its own, because PostgreSQL lets only a table's owner add and drop
the daily partitions that ingest and retention manage at run time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

from console.env import database_from_url

APPEND_ONLY_TABLES = ("console_journalentry", "ledger_entry", "ledger_node", "ledger_checkpoint")
APP_OWNED_TABLES = ("ingest_span", "ingest_record")


def app_role() -> str:
    """The role the application connects as: the user in DATABASE_URL."""
    url = os.environ.get("DATABASE_URL", "")
    return database_from_url("DATABASE_URL", url)["USER"] if url else ""


def app_role_grant(sender: Any, using: str = "default", **kwargs: Any) -> None:
    if getattr(sender, "name", "") != "tracing.ledger":
        return
    role = app_role()
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_user")
        if not role or cursor.fetchone()[0] == role:
            return  # one role for everything (development): nothing to separate
        grants_apply(cursor, role)


def grants_apply(cursor: Any, role: str) -> None:
    quoted = _quoted(cursor, role)
    cursor.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {quoted}")
    cursor.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"
    )
    cursor.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
    tables = ", ".join(APPEND_ONLY_TABLES)
    cursor.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {tables} FROM {quoted}")
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%s)",
        [list(APP_OWNED_TABLES)],
    )
    partitions = [row[0] for row in cursor.fetchall()]
    for table in (*APP_OWNED_TABLES, *partitions):
        cursor.execute(f'ALTER TABLE "{table}" OWNER TO {quoted}')


def _quoted(cursor: Any, role: str) -> str:
    cursor.execute("SELECT quote_ident(%s)", [role])
    return str(cursor.fetchone()[0])


@contextmanager
def database_owner() -> Iterator[None]:
    """Inside: the default connection is the owner's (TIDELINE_MIGRATE_DATABASE_URL), when
    one is configured; otherwise nothing changes."""
    url = os.environ.get("TIDELINE_MIGRATE_DATABASE_URL", "").strip()
    if not url:
        yield
        return
    owner = database_from_url("TIDELINE_MIGRATE_DATABASE_URL", url)
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        {key: owner[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    )
    connection.settings_dict["OPTIONS"] = {**saved["OPTIONS"], **owner["OPTIONS"]}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
