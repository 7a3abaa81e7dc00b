"""`manage.py flows import FILE` and `flows export [--out FILE]`: flow definitions and alert
rules as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracing.flows.documents import DefinitionsInvalid
from tracing.flows.services import flow_definitions_export, flow_definitions_import


class Command(BaseCommand):
    help = "Import or export flow definitions, owners, systems, calendars and alert rules as YAML."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        importing = actions.add_parser("import", help="import a file: all of it, or nothing")
        importing.add_argument("file", type=Path)
        exporting = actions.add_parser("export", help="write the current definitions")
        exporting.add_argument("--out", type=Path, help="a file; standard output without it")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            text = flow_definitions_export()
            if options["out"]:
                options["out"].write_text(text)
            else:
                self.stdout.write(text, ending="")
            return
        try:
            text = options["file"].read_text()
        except OSError as error:
            raise CommandError(f"Cannot read {options['file']}: {error.strerror}.") from None
        try:
            imported = flow_definitions_import(text=text, actor="manage.py")
        except DefinitionsInvalid as invalid:
            raise CommandError(f"{options['file']}: nothing was imported.\n{invalid}") from None
        for name in imported.created:
            self.stdout.write(f"Imported {name}.")
        for name in imported.unchanged:
            self.stdout.write(f"Unchanged: {name}.")
        rules = imported.rules
        for verb, names in (("Created", rules.created), ("Changed", rules.changed)):
            for name in names:
                self.stdout.write(f"{verb} alert rule {name}.")
        for name in rules.unchanged:
            self.stdout.write(f"Unchanged: alert rule {name}.")
