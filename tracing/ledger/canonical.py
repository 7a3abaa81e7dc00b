"""Ledger entries as RFC 8785 (JCS) canonical JSON, so anyone can recompute their hash.

Entries hold no floats (times are RFC 3339 strings, amounts strings), so JCS reduces to:
object keys sorted by UTF-16 code units, no insignificant whitespace, UTF-8, and strings
escaped as ECMAScript's JSON.stringify does — which is what `json.dumps(ensure_ascii=False)`
does for every string that is valid Unicode (it escapes ", \\, and control characters as
\\b \\t \\n \\f \\r or lowercase \\u00xx, nothing else).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

# Integers beyond IEEE 754's exact range would be rounded by a JCS implementation that
# reads numbers as doubles; an entry carries such a value as a string instead.
_SAFE_INTEGER = 2**53 - 1
# Below U+D800 code point order and UTF-16 code unit order agree; above it they may not.
_FIRST_SURROGATE = "\ud800"


def canonical(value: Any) -> bytes:
    """The JCS bytes of a JSON value made of dicts, lists, str, int, bool and None.

    ValueError for a float, a non-string key, an unsafe integer or a string that is not
    valid Unicode (a lone surrogate).
    """
    ordered = _checked(value)
    text = json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _checked(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        _check_text(value)
        return value
    if isinstance(value, int):
        if abs(value) > _SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside JSON's exact range; use a string")
        return value
    if isinstance(value, float):
        raise ValueError("floats are not allowed in ledger entries; use a string")
    if isinstance(value, dict):
        return _ordered_object(value)
    if isinstance(value, list | tuple):
        return [_checked(item) for item in value]
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _ordered_object(value: dict[Any, Any]) -> dict[str, Any]:
    for key in value:
        if not isinstance(key, str):
            raise ValueError(f"object key {key!r} is not a string")
        _check_text(key)
    keys = sorted(value)
    if any(key and max(key) >= _FIRST_SURROGATE for key in keys):
        keys.sort(key=lambda key: key.encode("utf-16-be"))
    return {key: _checked(value[key]) for key in keys}


def _check_text(text: str) -> None:
    if text and max(text) >= _FIRST_SURROGATE:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"string {text!r} is not valid Unicode") from None


def rfc3339(moment: datetime) -> str:
    """A time as entries carry it: UTC, microseconds, `Z` (2026-11-25T08:25:00.000000Z)."""
    if moment.tzinfo is None:
        raise ValueError("a ledger time must carry its time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ENTRY_ENCODER = msgspec.json.Encoder(order="sorted")


def canonical_entry(entry: dict[str, Any]) -> bytes:
    """canonical(entry), fast, for the sequencer: the C encoder msgspec sorts keys by code
    point and escapes strings exactly as JCS does, which is JCS whenever every key is below
    U+D800 and no value is a float or a string that is not valid Unicode. Entries are built
    only from fixed ASCII keys, ints, None and text PostgreSQL stored (always valid UTF-8);
    tests/tracing/ledger/test_canonical.py holds this path to canonical() byte for byte.
    """
    return _ENTRY_ENCODER.encode(entry)


# Entries built by PostgreSQL. Its to_json(text) escapes exactly as JCS does (\" \\ \b \f \n
# \r \t, other control characters as lowercase \u00xx, nothing else) and a text column is
# always valid UTF-8, so objects of fixed ASCII keys, strings and integers need only their
# keys put in order — done here, once, when the SQL is written.
# tests/tracing/ledger/test_sequencer.py holds these to canonical() byte for byte.


def jcs_value_sql(expression: str, *, plain: bool = False, integer: bool = False) -> str:
    """SQL for the JSON text of a string column, null when it is NULL. `plain`: a string that
    needs no escaping (hex, a formatted time): quoted as it is, without to_json's cost.
    `integer`: a safe integer."""
    if integer:
        return f"coalesce(({expression})::bigint::text, 'null')"
    if plain:
        return f"""coalesce('"' || ({expression}) || '"', 'null')"""
    return f"coalesce(to_json(({expression})::text)::text, 'null')"


def jcs_object_sql(members: dict[str, str], optional: dict[str, str] | None = None) -> str:
    """SQL for the JCS text of an object: `members` maps keys to SQL giving JSON text;
    `optional` maps keys to SQL giving a plain string (one that needs no escaping) that is
    left out, key and all, when NULL."""
    optional = optional or {}
    keys = sorted([*members, *optional])
    if any(not key.isascii() for key in keys) or keys[0] in optional:
        raise ValueError("keys must be ASCII and the first one always present")
    parts = []
    for number, key in enumerate(keys):
        comma = "," if number else ""
        if key in optional:
            parts.append(f"""coalesce('{comma}"{key}":"' || ({optional[key]}) || '"', '')""")
        else:
            parts.append(f"""'{comma}"{key}":' || {members[key]}""")
    return "'{' || " + " || ".join(parts) + " || '}'"
