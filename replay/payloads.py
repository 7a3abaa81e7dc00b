"""A repaired payload must be well-formed for its content type, and valid for its step.

Python 3.11's expat (2.4+) refuses billion-laughs expansion and never fetches external
entities, so the standard parser is safe for checking well-formedness here.
"""

from __future__ import annotations

import difflib
import json
import xml.etree.ElementTree as ElementTree
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import best_match


class PayloadInvalid(ValueError):
    pass


def payload_check(payload: bytes, content_type: str, schema: dict[str, Any] | None) -> None:
    media = content_type.split(";")[0].strip().lower()
    if media.endswith(("/json", "+json")):
        document = _json(payload)
        if schema is not None:
            _schema_check(document, schema)
    elif media.endswith(("/xml", "+xml")):
        try:
            ElementTree.fromstring(payload)  # noqa: S314 - see the module docstring
        except ElementTree.ParseError as error:
            raise PayloadInvalid(f"The repaired payload is not well-formed XML: {error}.") from None


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadInvalid(f"The repaired payload is not well-formed JSON: {error}.") from None


def _schema_check(document: Any, schema: dict[str, Any]) -> None:
    validator = validators.validator_for(schema)(schema)
    error = best_match(validator.iter_errors(document))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "the payload"
        raise PayloadInvalid(
            f"The repaired payload does not satisfy the step's schema: {where} fails {error.validator!r}."
        )


def payload_diff(original: bytes, repaired: bytes) -> str:
    """A unified diff of the two payloads, as text (binary payloads say only that they differ)."""
    try:
        before, after = original.decode(), repaired.decode()
    except UnicodeDecodeError:
        return "" if original == repaired else "binary payloads differ"
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), "stored", "repaired"
        )
    )
