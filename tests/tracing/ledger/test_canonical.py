"""Entries as RFC 8785 canonical JSON: the RFC's own examples, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tracing.ledger.canonical import canonical, rfc3339


def test_keys_sort_by_utf16_code_units_as_in_rfc_8785():
    # RFC 8785 3.2.3: the emoji (a surrogate pair) sorts before U+FB33.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    expected = (
        "{" + ",".join(f'"{k if k != chr(13) else chr(92) + "r"}":"{value[k]}"' for k in keys) + "}"
    )
    assert canonical(value) == expected.encode()


def test_strings_are_escaped_only_where_they_must_be():
    # RFC 8785 3.2.2.2's example string.
    assert canonical("\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/") == (
        '"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'.encode()
    )


def test_nesting_whitespace_and_literals():
    value = {"b": [1, True, None, {"d": "x", "c": -2}], "a": "é"}
    assert canonical(value) == '{"a":"é","b":[1,true,null,{"c":-2,"d":"x"}]}'.encode()


@pytest.mark.parametrize(
    "value", [1.5, {"a": 0.0}, [float("nan")], {1: "x"}, 2**53, "\ud800", {"\udfff": 1}, b"x"]
)
def test_it_refuses_what_has_no_single_canonical_form(value):
    with pytest.raises(ValueError):
        canonical(value)


def test_times_are_utc_with_microseconds():
    moment = datetime(2026, 11, 25, 9, 25, 0, 7, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339(moment) == "2026-11-25T08:25:00.000007Z"
    assert rfc3339(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 1, 1))
