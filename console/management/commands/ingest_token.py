"""`manage.py ingest_token create --sender S [--systems A,B]`: the token is the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.models import IngestToken
from console.services import ingest_token_create, ingest_token_revoke, system_names


class Command(BaseCommand):
    help = "Create or revoke the ingest tokens senders use on /v1/traces and /ingest/v1/."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a token for a sender")
        create.add_argument("--sender", required=True)
        create.add_argument(
            "--systems", default="", help="comma-separated systems the sender may name"
        )
        revoke = actions.add_parser("revoke", help="revoke a token by the prefix shown at creation")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "revoke":
            self._revoke(options["prefix"])
            return
        sender = options["sender"].strip()
        if not sender:
            raise CommandError("--sender must name who sends, e.g. runtime-prod.")
        try:
            systems = system_names(options["systems"])
        except ValueError as error:
            raise CommandError(f"--systems: {error}") from None
        issued = ingest_token_create(sender=sender, systems=systems, actor="manage.py")
        self.stderr.write(
            f"Ingest token {issued.token.prefix}… for sender {sender}; shown only now:"
        )
        self.stdout.write(issued.secret)

    def _revoke(self, prefix: str) -> None:
        tokens = list(IngestToken.objects.live().filter(prefix__startswith=prefix.rstrip("…")))
        if len(tokens) != 1:
            raise CommandError(
                f"{len(tokens)} live ingest tokens start with {prefix!r}; give a longer prefix."
            )
        ingest_token_revoke(token=tokens[0], actor="manage.py")
        self.stdout.write(f"Revoked ingest token {tokens[0].prefix}… of {tokens[0].sender}.")
