"""The application's role can append to the log but neither rewrite it nor switch its
triggers off; only the owner (who migrates) or a superuser could."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from tracing.ledger.roles import APPEND_ONLY_TABLES, grants_apply

APP_ROLE = "tideline_ledger_test_app"  # roles are per cluster: a name no other checkout uses


@pytest.fixture
def app_connection(transactional_db: None):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE])
        if not cursor.fetchone():
            cursor.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        grants_apply(cursor, APP_ROLE)
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"] or None, dbname=settings["NAME"],
        user=APP_ROLE, autocommit=True,
    ) as app:  # fmt: skip
        yield app


def test_the_app_role_is_no_superuser_and_owns_no_append_only_table(app_connection) -> None:
    assert app_connection.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() == (False,)
    owners = app_connection.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relowner = "
        "(SELECT oid FROM pg_roles WHERE rolname = current_user)",
        [list(APPEND_ONLY_TABLES)],
    ).fetchall()
    assert owners == []


def test_the_app_role_appends_and_reads(app_connection) -> None:
    app_connection.execute(
        "INSERT INTO ledger_entry (index, body, leaf_hash, kind, source_id, at, sequenced_at) "
        "VALUES (0, '{}', 'h', 'journal', 1, now(), now())"
    )
    assert app_connection.execute("SELECT count(*) FROM ledger_entry").fetchone() == (1,)
    app_connection.execute(
        "INSERT INTO ledger_pendingentry (kind, source_id) VALUES ('journal', 1)"
    )
    app_connection.execute("DELETE FROM ledger_pendingentry")


REWRITES = [
    "UPDATE {table} SET {column} = {column}",
    "DELETE FROM {table}",
    "TRUNCATE {table}",
    "ALTER TABLE {table} DISABLE TRIGGER ALL",
    "ALTER TABLE {table} DISABLE TRIGGER USER",
    "DROP TABLE {table} CASCADE",
    "ALTER TABLE {table} OWNER TO " + APP_ROLE,
]
COLUMNS = {"ledger_entry": "index", "ledger_node": "level"}


def test_the_app_role_cannot_rewrite_or_unprotect_the_log(app_connection) -> None:
    for table in APPEND_ONLY_TABLES:
        for statement in REWRITES:
            sql = statement.format(table=table, column=COLUMNS.get(table, "id"))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app_connection.execute(sql)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app_connection.execute("SET session_replication_role = replica")
