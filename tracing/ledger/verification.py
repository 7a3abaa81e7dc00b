"""`ledger verify`: recompute the tree from the entries and hold every checkpoint against it.

Trusts nothing the database says about hashes: each leaf hash is recomputed from the
entry's bytes, each subtree from the leaves, and each checkpoint's signature is checked
with the configured public key. Stored leaf hashes and nodes serve only to name where a
change happened (the first entry or subtree that disagrees), and a checkpoint's root to
say which checkpoint a rewritten history contradicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from psycopg import sql

from tracing.ledger import merkle
from tracing.ledger.models import Checkpoint
from tracing.ledger.note import NoteError, VerifierKey, checkpoint_body_parse, note_verify
from tracing.ledger.selectors import piece_hashes

# Entries read and recomputed at a time; a power of two, so that a chunk is a subtree.
CHUNK = 1 << 16


class Mismatch(Exception):
    """The first thing that does not hold; the message names it."""


@dataclass
class Verified:
    ok: bool
    problem: str = ""
    from_size: int = 0
    size: int = 0
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)


def ledger_tree_verify(*, key: VerifierKey, start: Checkpoint | None = None) -> Verified:
    """Verify from `start` (a checkpoint an earlier run verified) or from the first entry."""
    result = Verified(ok=False, from_size=start.size if start else 0)
    outermost = not connection.in_atomic_block
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if outermost:  # one snapshot: the sequencer may append while this runs
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _verify(cursor, key, start, result, two_connections=outermost)
    except Mismatch as mismatch:
        result.problem = str(mismatch)
        return result
    result.ok = True
    return result


def _verify(
    cursor: Any,
    key: VerifierKey,
    start: Checkpoint | None,
    result: Verified,
    *,
    two_connections: bool,
) -> None:
    checkpoints = list(Checkpoint.objects.order_by("size", "id"))
    for checkpoint in checkpoints:
        _signature_check(checkpoint, key)
    compact = _compact_from(cursor, start)
    pending = [c for c in checkpoints if c.size >= compact.end]
    pending = _checkpoints_at(compact, pending, result)
    # Closed here, inside the transaction, even when a Mismatch stops the reading.
    chunks_of = _entry_chunks_beside if two_connections else _entry_chunks
    with contextlib.closing(chunks_of(cursor, compact.end)) as chunks:
        for begin, rows in chunks:
            grown = _chunk_fast(cursor, compact, rows, pending, result)
            if grown is not None:
                compact = grown
                pending = [c for c in pending if c.size > compact.end]
                continue
            stored_nodes = _nodes_between(cursor, begin, begin + len(rows))
            pending = _chunk_checked(compact, rows, stored_nodes, pending, result)
    if pending:
        raise Mismatch(
            f"checkpoint {pending[0].pk} (size {pending[0].size}): the log holds only "
            f"{compact.end} entries (entries were removed)"
        )
    result.size = compact.end


Row = tuple[int, bytes, bytes]
ENTRIES_SQL = "SELECT index, body, leaf_hash FROM ledger_entry WHERE index >= %s ORDER BY index"


def _chunk_checked(
    compact: merkle.CompactRange,
    rows: list[Row],
    stored_nodes: dict[tuple[int, int], bytes],
    pending: list[Checkpoint],
    result: Verified,
) -> list[Checkpoint]:
    """Entry by entry: slow, but it names the first entry or subtree that does not hold."""
    for index, body, stored_leaf in rows:
        if index != compact.end:
            raise Mismatch(f"entry {compact.end} is missing (the next entry is {index})")
        leaf = hashlib.sha256(b"\x00" + body).digest()
        if leaf != stored_leaf:
            raise Mismatch(f"entry {index}: its bytes do not match its leaf hash (changed)")
        for level, node_index, digest in compact.append(leaf):
            if stored_nodes.get((level, node_index), digest) != digest:
                first = node_index << level
                raise Mismatch(
                    f"entry {first}..{first + (1 << level) - 1}: the entries no longer give "
                    f"the subtree the sequencer stored (changed, moved, added or removed)"
                )
        if pending and pending[0].size == compact.end:
            pending = _checkpoints_at(compact, pending, result)
    return pending


def _chunk_fast(
    cursor: Any,
    compact: merkle.CompactRange,
    rows: list[Row],
    pending: list[Checkpoint],
    result: Verified,
) -> merkle.CompactRange | None:
    """An aligned chunk level by level, in tight loops, compared with the stored leaf hashes
    and subtrees a whole level at a time: the compact range grown by it, or None when
    anything differs (the caller then goes entry by entry to name it)."""
    begin, end = rows[0][0], rows[-1][0] + 1
    if begin != compact.end or begin % CHUNK or end - begin != len(rows):
        return None  # unaligned (an incremental run's start), or an entry missing or added
    sha256 = hashlib.sha256
    leaves = [sha256(b"\x00" + body).digest() for _, body, _ in rows]
    if leaves != [leaf for _, _, leaf in rows]:
        return None
    levels = [leaves]
    while len(levels[-1]) > 1:
        lower = levels[-1]
        levels.append(
            [
                sha256(b"\x01" + lower[i] + lower[i + 1]).digest()
                for i in range(0, len(lower) - 1, 2)
            ]
        )
    if _levels_stored(cursor, begin, len(levels)) != levels[1:]:
        return None
    for checkpoint in [c for c in pending if begin < c.size < end]:
        inside = [levels[lv][i - (begin >> lv)] for lv, i in merkle.pieces(begin, checkpoint.size)]
        _checkpoint_root_check(checkpoint, merkle.fold([*compact.hashes(), *inside]), result)
    grown = merkle.CompactRange(compact.end, compact.hashes())
    above = [
        completed
        for lv, i in merkle.pieces(begin, end)
        for completed in grown.append(levels[lv][i - (begin >> lv)], lv)
    ]
    stored = piece_hashes(cursor, [(lv, i) for lv, i, _ in above])
    if any(stored.get((lv, i), digest) != digest for lv, i, digest in above):
        return None
    _checkpoints_at(grown, [c for c in pending if c.size == end], result)
    return grown


def _levels_stored(cursor: Any, begin: int, count: int) -> list[list[bytes]]:
    """The stored subtrees inside leaves [begin, begin + CHUNK), per level from 1, in order
    (a level is one array: no sort of the whole chunk's nodes)."""
    cursor.execute(
        "SELECT (SELECT coalesce(array_agg(n.hash ORDER BY n.index), '{}') FROM ledger_node n "
        "        WHERE n.level = l.level AND n.index >= %s >> l.level "
        "        AND n.index < (%s + %s) >> l.level) "
        "FROM generate_series(1, %s) AS l(level) ORDER BY l.level",
        [begin, begin, CHUNK, count - 1],
    )
    return [hashes for (hashes,) in cursor.fetchall()]


def _signature_check(checkpoint: Checkpoint, key: VerifierKey) -> None:
    try:
        body = checkpoint_body_parse(note_verify(checkpoint.note, key))
    except NoteError as error:
        raise Mismatch(f"checkpoint {checkpoint.pk} (size {checkpoint.size}): {error}") from None
    if (
        body.origin != key.name
        or body.size != checkpoint.size
        or body.root != bytes(checkpoint.root)
    ):
        raise Mismatch(
            f"checkpoint {checkpoint.pk} (size {checkpoint.size}): its signed note says "
            f"size {body.size} of {body.origin}, not what the table holds"
        )


def _compact_from(cursor: Any, start: Checkpoint | None) -> merkle.CompactRange:
    if start is None:
        return merkle.CompactRange()
    frontier = merkle.pieces(0, start.size)
    stored = piece_hashes(cursor, frontier)
    try:
        compact = merkle.CompactRange(start.size, [stored[piece] for piece in frontier])
    except KeyError:
        raise Mismatch(f"the subtrees under checkpoint {start.pk} are missing") from None
    # The stored right edge is trusted only because it rebuilds a root verified before.
    if compact.root() != bytes(start.root):
        raise Mismatch(
            f"checkpoint {start.pk} (size {start.size}): the stored subtrees no longer give "
            "the root an earlier verification saw (the tree was changed under it)"
        )
    return compact


def _checkpoints_at(
    compact: merkle.CompactRange, pending: list[Checkpoint], result: Verified
) -> list[Checkpoint]:
    root = compact.root()
    while pending and pending[0].size == compact.end:
        _checkpoint_root_check(pending.pop(0), root, result)
    return pending


def _checkpoint_root_check(checkpoint: Checkpoint, root: bytes, result: Verified) -> None:
    if bytes(checkpoint.root) != root:
        raise Mismatch(
            f"checkpoint {checkpoint.pk} (size {checkpoint.size}): the entries give another "
            "root (an entry up to it was changed, added, removed or moved)"
        )
    result.checkpoints += 1
    result.last_checkpoint = checkpoint


def _entry_chunks(cursor: Any, begin: int) -> Generator[tuple[int, list[Row]], None, None]:
    """Streamed through a server-side cursor in binary (bytea arrives as is, not as hex
    twice its size), up to the next multiple of CHUNK at a time so that later chunks align.
    Rows are (index, body, stored leaf hash)."""
    with cursor.connection.connection.cursor(name="ledger_verify", binary=True) as entries:
        entries.execute(ENTRIES_SQL, [begin])
        yield from _read_ahead(entries.fetchmany, begin)


def _entry_chunks_beside(cursor: Any, begin: int) -> Generator[tuple[int, list[Row]], None, None]:
    """_entry_chunks, streamed on a second connection that sees exactly this transaction's
    snapshot: PostgreSQL then reads the entries in one process while this connection reads
    the stored subtrees in another. Only for a transaction of its own (a snapshot shows
    other connections nothing this transaction wrote)."""
    cursor.execute("SELECT pg_export_snapshot()")
    snapshot = cursor.fetchone()[0]
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.autocommit = True  # the transaction is begun here, with the snapshot
        other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        with other.cursor(name="ledger_verify", binary=True) as entries:
            entries.execute(ENTRIES_SQL, [begin])
            yield from _read_ahead(entries.fetchmany, begin)
    finally:
        other.close()


def _read_ahead(fetch: Callable[[int], list[Row]], begin: int) -> Iterator[tuple[int, list[Row]]]:
    """The next chunk is read while this one is recomputed, so that PostgreSQL and Python
    work at once (psycopg lets a connection be used from two threads, one at a time)."""
    ahead: queue.Queue[tuple[int, list[Row]] | BaseException] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read(position: int) -> None:
        try:
            while not stop.is_set():
                rows = fetch(CHUNK - position % CHUNK)
                ahead.put((position, rows))
                if not rows:
                    return
                position = rows[-1][0] + 1
        except BaseException as error:  # handed over, raised in the verifying thread
            ahead.put(error)

    reader = threading.Thread(target=read, args=(begin,), name="ledger-verify-read", daemon=True)
    reader.start()
    try:
        while True:
            chunk = ahead.get()
            if isinstance(chunk, BaseException):
                raise chunk
            if not chunk[1]:
                return
            yield chunk
    finally:
        stop.set()
        while reader.is_alive():  # a reader blocked on a full queue must see `stop`
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.1)
        reader.join()


def _nodes_between(cursor: Any, begin: int, end: int) -> dict[tuple[int, int], bytes]:
    """The stored subtrees that end within leaves [begin, end + gap)."""
    levels, lows, highs = [], [], []
    level = 1
    while (1 << level) <= end * 2:
        levels.append(level)
        lows.append(begin >> level)
        highs.append((end + CHUNK) >> level)
        level += 1
    cursor.execute(
        "SELECT n.level, n.index, n.hash FROM ledger_node n "
        "JOIN unnest(%s::smallint[], %s::bigint[], %s::bigint[]) AS r(level, lo, hi) "
        "ON n.level = r.level AND n.index BETWEEN r.lo AND r.hi",
        [levels, lows, highs],
    )
    return {(level, index): bytes(digest) for level, index, digest in cursor.fetchall()}
