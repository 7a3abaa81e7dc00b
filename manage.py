#!/usr/bin/env python
"""Tideline's command-line entry point."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    from console.embedded import provide_services

    # Try-out mode: with DATABASE_URL/REDIS_URL unset, start the embedded servers before
    # Django reads its settings, so every command (and every child of `serve`) sees them.
    provide_services(allow_embedded="--no-embedded" not in sys.argv)

    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        sys.exit(f"Tideline cannot start: {error}")


if __name__ == "__main__":
    main()
