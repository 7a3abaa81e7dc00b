"""The sequencer's entries, a chunk of the queue at a time, the records' built on a second
connection while the first stores the chunk before.

PostgreSQL works in two processes at once: one builds records' entries (entries.py's SQL)
while the other COPYs and indexes the entries of the chunk before. The second connection
reads in exactly the batch transaction's snapshot and writes nothing: the batch stays one
transaction under the sequencer's lock, in queue order. Only for a batch transaction of its
own (a snapshot shows other connections nothing this transaction wrote); inside an outer
one, everything is built on the one connection before storing begins.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from django.db import connection
from psycopg import sql

from tracing.ledger.entries import (
    BuiltEntry,
    PendingRow,
    dead_letters_built,
    journal_built,
    records_built,
)

CHUNK = 2_500  # queued rows: small enough that little of the building waits alone


def entry_chunks(
    cursor: Any, pending: list[PendingRow], *, beside: bool, meanwhile: Callable[[], None]
) -> Generator[list[BuiltEntry], None, None]:
    """The entries for queued rows, in queue order, a chunk at a time; a source row that no
    longer exists (removed before it was sequenced) has no entry. `meanwhile` is this
    connection's work of the batch that needs no entry: done while the second builds."""
    others = {
        entry.pending_id: entry
        for entry in (
            *dead_letters_built(
                cursor, [row for row in pending if row[1] == "dead_letter"]
            ).values(),
            *journal_built(cursor, [row for row in pending if row[1] == "journal"]).values(),
        )
    }
    chunks = [pending[start : start + CHUNK] for start in range(0, len(pending), CHUNK)]
    records = [[row for row in chunk if row[1] == "record"] for chunk in chunks]
    built = (
        _records_beside(cursor, records, meanwhile)
        if beside
        else iter([records_built(cursor, rows) for rows in records])
    )
    if not beside:
        meanwhile()
    for chunk, chunk_records in zip(chunks, built, strict=True):
        found = others | {entry.pending_id: entry for entry in chunk_records.values()}
        yield [found[row[0]] for row in chunk if row[0] in found]


def _records_beside(
    cursor: Any, chunks: list[list[PendingRow]], meanwhile: Callable[[], None]
) -> Iterator[dict[int, BuiltEntry]]:
    """records_built for each chunk, in order, on a second connection in this transaction's
    snapshot, one chunk ahead of the one being stored."""
    cursor.execute("SELECT pg_export_snapshot()")
    snapshot = cursor.fetchone()[0]
    other = connection.get_new_connection(connection.get_connection_params())
    # Room for the chunks built while this connection does its work meanwhile.
    ahead: queue.Queue[dict[int, BuiltEntry] | BaseException] = queue.Queue(maxsize=8)
    stop = threading.Event()

    def build() -> None:
        try:
            other.autocommit = True  # the transaction is begun here, with the snapshot
            other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            with other.cursor() as reading:
                for rows in chunks:
                    if stop.is_set():
                        return
                    ahead.put(records_built(reading, rows))
        except BaseException as error:  # handed over, raised in the sequencing thread
            ahead.put(error)

    builder = threading.Thread(target=build, name="ledger-sequence-build", daemon=True)
    builder.start()
    try:
        meanwhile()
        for _ in chunks:
            built = ahead.get()
            if isinstance(built, BaseException):
                raise built
            yield built
    finally:
        stop.set()
        while builder.is_alive():  # a builder blocked on a full queue gets room to stop
            try:
                ahead.get_nowait()
            except queue.Empty:
                builder.join(0.01)
        other.close()
