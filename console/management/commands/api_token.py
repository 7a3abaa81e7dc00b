"""`manage.py api_token create --user NAME`: a personal API token, printed as the last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.services import api_token_create


class Command(BaseCommand):
    help = "Create a personal API token for a user; the token is the last line of output."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a token")
        create.add_argument("--user", required=True)
        create.add_argument("--name", default="command line")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = get_user_model().objects.get(username=options["user"], is_active=True)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No active user named {options['user']!r}.") from None
        issued = api_token_create(user=user, name=options["name"])
        self.stderr.write(
            f"Personal API token {issued.token.prefix}… for {user.get_username()}; shown only now:"
        )
        self.stdout.write(issued.secret)
