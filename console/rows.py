"""Reads by hand, for the reads every request or every flow view makes.

For those (an API token with its user and groups, a flow's summary with its definition and
owner) the ORM took longer to build its query and its objects (about 1 ms, in-process)
than PostgreSQL took to answer. These read the same columns with a fixed statement that
is prepared once per connection, and give the same model instances, their database values
converted as Django converts them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
from django.db import connection, models
from psycopg.abc import Loader
from psycopg.pq import Format

M = TypeVar("M", bound=models.Model)

# psycopg's own (compiled) timestamptz parser: Django's replaces it with a pure-Python one,
# which was a tenth of the summarizer's time on a week of spans.
TIMESTAMPTZ = cast(
    "type[Loader]",
    psycopg.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, Format.TEXT),
)


class _PreparingCursor(psycopg.Cursor[Any]):
    """Binds on the server and prepares every statement, so PostgreSQL may keep a plan per
    connection instead of planning each read of a flow afresh. Planning the record read over
    the daily partitions took 2-4 ms, running it 0.3-0.5 ms (bench world, 38 partitions); its
    sub-selects (ANY_TEXT, ANY_BYTEA) make the generic plan as good as a fresh one, and
    PostgreSQL keeps it. The spans read it still plans each time: pruning the partitions
    outside the window at planning wins there. One flow's reads (`flows_facts`, in process, on
    the bench world) went from 9.3-11.0 ms to 2.9-3.8 ms.
    Django's own cursor binds on the client and never prepares (settings: prepare_threshold).
    """

    def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
        def prepared(sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
            return psycopg.Cursor.execute(self, sql, params, prepare=True, **options)

        # Through Django's execute wrappers and into its query log, as its own cursors go.
        run = prepared
        for wrapper in reversed(connection.execute_wrappers):
            run = functools.partial(wrapper, run)
        started = time.monotonic()
        try:
            return run(query, params, False, {"connection": connection, "cursor": self})
        finally:
            if connection.queries_logged:
                seconds = f"{time.monotonic() - started:.3f}"
                connection.queries_log.append({"sql": str(query), "time": seconds})


@contextmanager
def reads_cursor() -> Iterator[_PreparingCursor]:
    """On Django's connection and in its transaction, past its cursor wrapper; errors still
    become Django's, and mark the connection for its health check, as through its cursor.
    As Django's cursor does, a kept connection the server dropped is replaced first: the
    token lookup is the first query of an API request."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors, _PreparingCursor(connection.connection) as cursor:
        cursor.adapters.register_loader("timestamptz", TIMESTAMPTZ)
        yield cursor


def columns(model: type[models.Model], alias: str) -> str:
    """The model's columns as `alias.column, ...`, in the order `instance` takes them."""
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


def width(model: type[models.Model]) -> int:
    return len(model._meta.concrete_fields)


def instance(model: type[M], values: Sequence[Any]) -> M:
    """The instance a queryset would have built from these column values."""
    fields = model._meta.concrete_fields
    converted = [
        field.from_db_value(value, None, connection)
        if value is not None and hasattr(field, "from_db_value")
        else value
        for field, value in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], converted)
