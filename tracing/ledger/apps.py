from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LedgerConfig(AppConfig):
    name = "tracing.ledger"
    label = "ledger"
    verbose_name = "Ledger: the Merkle log, checkpoints and proofs"

    def ready(self) -> None:
        from tracing.ledger.roles import app_role_grant

        # After every migrate (run as the tables' owner), the application's role gets
        # exactly the rights it needs: append-only tables stay insert-only for it.
        post_migrate.connect(app_role_grant, dispatch_uid="ledger-app-role-grant")
