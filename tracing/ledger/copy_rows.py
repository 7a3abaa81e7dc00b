"""The sequencer's rows in PostgreSQL's binary COPY format, packed with struct.

A sequenced record costs two rows (its entry and, on average, one subtree node); psycopg's
write_row dumps each value through its adapters, which was a third of the sequencer's
Python time. The format is PostgreSQL's own ("COPY", binary file format): a signature, then
per row a field count and each field as a 32-bit length (-1 for NULL) and its bytes;
timestamptz is microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
TRAILER = b"\xff\xff"
NULL = b"\xff\xff\xff\xff"

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Field count, the index (length 8, value), the body's length.
_ENTRY_HEAD = struct.Struct(">hiqi")
_INT8 = struct.Struct(">iq")  # length 8, value
# Field count; level (length 2, value), index (length 8, value), hash (length 32, bytes).
_NODE = struct.Struct(">hihiqi32s")
_LEAF_LENGTH = struct.pack(">i", 32)


def timestamp(moment: datetime) -> bytes:
    return _INT8.pack(8, (moment - _EPOCH) // _MICROSECOND)


def text(value: str | None) -> bytes:
    if value is None:
        return NULL
    encoded = value.encode()
    return struct.pack(">i", len(encoded)) + encoded


def entry_row(
    index: int, body: bytes, leaf: bytes, kind: bytes, source_id: int, at: datetime,
    system: str | None, correlation_id: str | None, sequenced_at: bytes,
) -> bytes:  # fmt: skip
    """A ledger_entry row in ENTRY_COLUMNS' order; `kind` and `sequenced_at` come packed
    (by text and timestamp), being the same for many rows."""
    return b"".join((
        _ENTRY_HEAD.pack(9, 8, index, len(body)), body, _LEAF_LENGTH, leaf, kind,
        _INT8.pack(8, source_id), timestamp(at), text(system), text(correlation_id),
        sequenced_at,
    ))  # fmt: skip


def node_row(level: int, index: int, digest: bytes) -> bytes:
    return _NODE.pack(3, 2, level, 8, index, 32, digest)
