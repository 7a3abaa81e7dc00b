"""Model instances from rows read by hand.

For a read on every request (a flow's summary with its definition and owner) the ORM took
longer to build its query and its objects (about 1 ms, in-process) than PostgreSQL took to
answer.
These read the same columns with a fixed statement that can be prepared, and give the same
model instances, their database values converted as Django converts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)


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
