"""Entries as RFC 8785 canonical JSON: the RFC's own examples, and what it refuses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tracing.ledger.canonical import canonical, canonical_entry, rfc3339


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


def test_the_sequencers_fast_path_gives_exactly_the_canonical_bytes():
    """canonical_entry (msgspec) against canonical (the checked path) on entry-shaped values
    with every kind of character a stored text can hold."""
    rng = random.Random(8785)  # noqa: S311 - test data, not secrets
    specials = [chr(c) for c in (*range(0x20), 0x22, 0x2F, 0x5C, 0x7F, 0x80, 0x9F, 0xA0, 0xE9,
                                 0x2028, 0x2029, 0xD7FF, 0xE000, 0xFEFF, 0xFFFD, 0xFFFF,
                                 0x1F41F, 0x10FFFF)]  # fmt: skip

    def text() -> str:
        return "".join(
            rng.choice(specials) if rng.random() < 0.3 else chr(rng.randrange(0x20, 0x7F))
            for _ in range(rng.randrange(12))
        )

    for number in range(2000):
        entry = {
            "v": 1, "kind": rng.choice(["record", "dead_letter", "journal"]), "id": str(number),
            "at": rfc3339(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=number)),
            "actor": text(), "action": text(), "system": rng.choice([None, text()]),
            "raw_position": rng.randrange(2**31), "death": rng.choice([1, 2, 2**53 - 1]),
            "source": None, "flag": rng.choice([True, False]),
            "digests": {name: f"sha256:{rng.randbytes(32).hex()}" for name in
                        rng.sample(["raw_body", "payload", "headers", "error"], 2)},
        }  # fmt: skip
        assert canonical_entry(entry) == canonical(entry), entry
