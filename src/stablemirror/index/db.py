"""Database plumbing shared by every SQL-backed component (index, auth, audit, jobs).

Queries are plain synchronous SQLAlchemy run off the event loop, except SQLite reads:
in WAL mode a reader never waits for a writer and a point lookup takes microseconds,
so they run inline, which is what makes manifest GETs cheap. SQLite writers take the
lock up front (BEGIN IMMEDIATE) so concurrent worker processes queue instead of failing,
and one writer thread per process keeps them in order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from stablemirror.oci.errors import StorageFull

T = TypeVar("T")


def _is_disk_full(e: OperationalError) -> bool:
    """SQLite's SQLITE_FULL or PostgreSQL's disk_full (SQLSTATE 53100)."""
    orig = e.orig
    return (getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or getattr(orig, "sqlstate", None) == "53100")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engines(url: str) -> tuple[Engine, Engine]:
    """(reader, writer) engines for `url`; the same engine twice for PostgreSQL."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        return engine, engine
    args = {"check_same_thread": False, "timeout": 30}
    reader = create_engine(url, connect_args=args)
    writer = create_engine(url, connect_args=args)
    event.listen(reader, "connect", _sqlite_pragmas)
    event.listen(writer, "connect", _sqlite_pragmas)

    @event.listens_for(writer, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

    @event.listens_for(writer, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return reader, writer


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.reader, self.writer = make_engines(url)
        self._pool = ThreadPoolExecutor(1 if self.is_sqlite else 8, thread_name_prefix="db")
        self.insert = sqlite.insert if self.is_sqlite else postgresql.insert

    async def read(self, fn: Callable[[Connection], T]) -> T:
        if self.is_sqlite:
            with self.reader.connect() as conn:
                return fn(conn)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tx, fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one transaction; everything it writes commits together or not at all."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tx, fn)

    def _tx(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.writer.begin() as conn:
                return fn(conn)
        except OperationalError as e:
            if _is_disk_full(e):
                raise StorageFull(reason="index") from e
            raise

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.reader.dispose()
        self.writer.dispose()
