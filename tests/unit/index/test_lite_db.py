"""The stdlib-sqlite3 index's database (index/lite_db.py): no query on the event loop, a
write that waits for another process's writer lock leaves the loop and the reads running,
a transaction commits whole or not at all, and a full index is StorageFull."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.lite_db import LiteDatabase
from stablemirror.oci.errors import StorageFull


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[LiteDatabase]:
    path = tmp_path / "index.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
    database = LiteDatabase(str(path))
    yield database
    await database.close()


async def test_queries_run_on_their_own_threads(db: LiteDatabase) -> None:
    loop_thread = threading.current_thread().name
    write = await db.write(lambda c: threading.current_thread().name)
    read = await db.read(lambda c: threading.current_thread().name)
    assert write.startswith("index-write") and read.startswith("index-read")
    assert loop_thread not in (write, read)
    mode = await db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"


async def test_a_waiting_write_blocks_neither_the_loop_nor_reads(db: LiteDatabase) -> None:
    await db.write(lambda c: c.execute("INSERT INTO t VALUES ('a', x'01')"))
    other = sqlite3.connect(db.path, isolation_level=None)  # another process's writer
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES ('b', x'02')")
    try:
        write = asyncio.ensure_future(
            db.write(lambda c: c.execute("INSERT INTO t VALUES ('c', x'03')")))
        began = time.monotonic()
        await asyncio.sleep(0.3)  # the loop keeps turning while the write waits
        assert time.monotonic() - began < 1.0
        assert not write.done()
        rows = await db.read(lambda c: [r[0] for r in c.execute("SELECT k FROM t")])
        assert rows == ["a"]  # WAL: the reader neither waits nor sees the open transaction
        other.execute("COMMIT")
        await asyncio.wait_for(write, 10)
    finally:
        other.close()
    assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 3


async def test_a_failed_transaction_writes_nothing(db: LiteDatabase) -> None:
    def half(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('a', x'01')")
        raise RuntimeError("halfway")

    with pytest.raises(RuntimeError):
        await db.write(half)
    assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    await db.write(lambda c: c.execute("INSERT INTO t VALUES ('a', x'01')"))  # usable again


async def test_a_full_index_is_storage_full(db: LiteDatabase) -> None:
    pages = await db.read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await db.write(lambda c: c.execute(f"PRAGMA max_page_count={pages + 2}"))
    with pytest.raises(StorageFull):
        await db.write(lambda c: c.execute("INSERT INTO t VALUES ('big', ?)",
                                           (b"\0" * 1_000_000,)))
    await db.write(lambda c: c.execute("INSERT INTO t VALUES ('small', x'01')"))


async def test_a_snapshot_sees_one_state(db: LiteDatabase) -> None:
    await db.write(lambda c: c.execute("INSERT INTO t VALUES ('a', x'01')"))
    other = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)

    def two_counts(c: sqlite3.Connection) -> tuple[int, int]:
        first = c.execute("SELECT count(*) FROM t").fetchone()[0]
        other.execute("INSERT INTO t VALUES ('b', x'02')")  # commits meanwhile
        return first, c.execute("SELECT count(*) FROM t").fetchone()[0]

    try:
        assert await db.snapshot(two_counts) == (1, 1)
    finally:
        other.close()
    assert await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 2


async def test_a_write_transaction_holds_the_writer_lock_from_its_start(
        db: LiteDatabase) -> None:
    """Read, then write on what was read (a claim, a conditional forget, an audit append):
    another process's write waits for it instead of landing in between, which in WAL mode
    would fail the first transaction's upgrade at once ("database is locked")."""
    other = LiteDatabase(db.path)  # another process's connections
    has_read = threading.Event()

    def read_then_write(c: sqlite3.Connection) -> None:
        n = c.execute("SELECT count(*) FROM t").fetchone()[0]
        has_read.set()
        time.sleep(0.3)  # the other writer tries meanwhile
        c.execute("INSERT INTO t VALUES (?, x'00')", (f"first-saw-{n}",))

    try:
        first = asyncio.ensure_future(db.write(read_then_write))
        assert await asyncio.to_thread(has_read.wait, 10)
        await other.write(lambda c: c.execute("INSERT INTO t VALUES ('second', x'00')"))
        await first
        keys = await db.read(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")])
        assert keys == ["first-saw-0", "second"]
    finally:
        await other.close()
