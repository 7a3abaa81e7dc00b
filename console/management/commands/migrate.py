"""Django's `migrate`, run as the database owner when TIDELINE_MIGRATE_DATABASE_URL names one.

The application itself connects as DATABASE_URL's role, which must not own the ledger's
tables; after migrating, that role is granted what it needs (tracing/ledger/roles.py).
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.migrate import Command as DjangoMigrate

from tracing.ledger.roles import database_owner


class Command(DjangoMigrate):
    def handle(self, *args: Any, **options: Any) -> None:
        if options["database"] != "default":
            super().handle(*args, **options)
            return
        with database_owner():
            super().handle(*args, **options)
