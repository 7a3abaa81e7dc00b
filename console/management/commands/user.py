"""`manage.py user create NAME --role R`: scripted set-up of people."""

from __future__ import annotations

import getpass
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from console.access import Role
from console.services import user_create


class Command(BaseCommand):
    help = "Create a user with one of the roles support, operator, auditor, admin."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a user")
        create.add_argument("username")
        create.add_argument("--role", required=True, choices=[role.value for role in Role])
        create.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise CommandError(f"A user named {username!r} exists already.")
        password = self._password(options["password_stdin"])
        try:
            validate_password(password, get_user_model()(username=username))
        except ValidationError as error:
            raise CommandError("Password refused: " + " ".join(error.messages)) from None
        user_create(
            username=username, role=Role(options["role"]), password=password, actor="manage.py"
        )
        self.stdout.write(f"Created {username} with role {options['role']}.")

    def _password(self, from_stdin: bool) -> str:
        if from_stdin:
            return sys.stdin.readline().rstrip("\n")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        return first
