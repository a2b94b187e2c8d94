"""The index on the stdlib's sqlite3, without SQLAlchemy (docs/footprint.md): what a node
cache (`serve --role node`) runs on, over the same file and schema as the SQLAlchemy
backend (index/db.py), so either opens the other's index.

Up to three connections per process (reader, writer, and one for long snapshot scans, so
they never hold up the point reads), each owned by its own single thread, which opens it
(lazily, after any fork), runs every statement on it and closes it: the event loop never
waits on SQLite and never shares a connection with a thread (the "a thread never uses an
fd the loop may close" rule, files/fd_jobs.py). The same guarantees as index/db.py's
SQLite engines:

* WAL (switched with bounded retries, files/sqlite_wal.py ensure_wal), synchronous=NORMAL,
  foreign keys on, no memory-mapped reads, a 30 s busy timeout;
* `write`: one transaction begun with BEGIN IMMEDIATE, so concurrent worker processes
  queue for the writer lock instead of failing on an upgrade; all of it commits or none;
  one writer thread per process keeps this process's writes in order;
* `read`: autocommit on the reader connection, so each statement sees the latest commit;
  in WAL mode a reader never waits for a writer;
* `snapshot`: the reads of one deferred transaction (one consistent view), which in WAL
  mode blocks no writer;
* a full disk is StorageFull, as on the SQLAlchemy backend.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from stablemirror.files.sqlite_wal import ensure_wal
from stablemirror.oci.errors import StorageFull

T = TypeVar("T")
BUSY_TIMEOUT_SECONDS = 30


def open_connection(path: str) -> sqlite3.Connection:
    """A connection with the index's pragmas, in autocommit (we issue BEGIN ourselves)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        ensure_wal(conn)  # bounded retries: workers that start together race for it
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        # A page fault on a mapped file is SIGBUS where a read() is an error.
        conn.execute("PRAGMA mmap_size=0")
    except BaseException:
        conn.close()
        raise
    return conn


def _disk_full(e: sqlite3.Error) -> bool:
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class OwnedConnection:
    """One sqlite3 connection and the one thread that ever touches it."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._closed = False
        self._used = False  # a connection never used has no thread and nothing to close

    def _executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            # Forked: the parent's thread did not come along and its connection is the
            # parent's; both are left alone (closing it here would disturb the parent).
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
            self._conn, self._pid = None, os.getpid()
        return self._thread

    def _connection(self) -> sqlite3.Connection:  # on the owning thread only
        if self._conn is None:
            self._conn = open_connection(self.path)
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the index connection {self.name} is closed")
        loop = asyncio.get_running_loop()
        self._used = True
        return await loop.run_in_executor(self._executor(), lambda: fn(self._connection()))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pid == os.getpid() and self._used:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


def _transaction(begin: str, fn: Callable[[sqlite3.Connection], T]
                 ) -> Callable[[sqlite3.Connection], T]:
    def run(conn: sqlite3.Connection) -> T:
        try:
            conn.execute(begin)
        except sqlite3.OperationalError as e:
            if _disk_full(e):
                raise StorageFull(reason="index") from e
            raise
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and _disk_full(e):
                raise StorageFull(reason="index") from e
            raise
        return result
    return run


class LiteDatabase:
    """The SQLite file at `path`, as index/db.py's Database offers it, on sqlite3."""

    is_sqlite = True

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = OwnedConnection(path, "index-write")
        self._reader = OwnedConnection(path, "index-read")
        self._scans = OwnedConnection(path, "index-snapshot")  # no thread until used

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._reader.run(fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one transaction; everything it writes commits together or not at all."""
        return await self._writer.run(_transaction("BEGIN IMMEDIATE", fn))

    async def snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The reads of `fn` against one consistent snapshot (a deferred transaction, a
        read transaction in WAL mode from its first SELECT: it never blocks writers)."""
        return await self._scans.run(_transaction("BEGIN", fn))

    async def close(self) -> None:
        await self._reader.close()
        await self._scans.close()
        await self._writer.close()
