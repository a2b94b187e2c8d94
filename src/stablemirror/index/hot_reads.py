"""The queries every pull runs, without SQLAlchemy's engine in the way.

Measured (bench/RESULTS.md): about half of a manifest GET went into SQLAlchemy building,
checking out and wrapping a query whose execution took a few percent of it. The statements
here are still generated from the SQLAlchemy schema, once, at start-up; only their
execution skips the engine:

* SQLite: one plain sqlite3 connection per process (opened lazily, after the fork), in
  autocommit, so every read sees the latest commit; WAL readers never wait for writers,
  and a point lookup takes microseconds, so it runs inline on the event loop.
* PostgreSQL: a few psycopg async connections per process (bounded: concurrent clients
  wait for one, they never open more), autocommit, server-side prepared statements, and
  no thread hop. A connection that breaks (PostgreSQL restarted) is dropped and the request
  gets 503 UNAVAILABLE; the next request opens a fresh one, so the server recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from stablemirror.oci.errors import Unavailable

if TYPE_CHECKING:  # imported when first used: an SQLite server never loads the driver
    import psycopg

PG_CONNECTIONS = 4  # per process; the engine's pool holds the rest


class HotReads(Protocol):
    async def one(self, name: str, /, **params: Any) -> tuple[Any, ...] | None: ...

    async def close(self) -> None: ...


def hot_reads(url: str, statements: dict[str, Select[Any]]) -> HotReads | None:
    """The fast path for `url`'s database, or None where the engine must do (in-memory)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        database = parsed.database
        return (SqliteHotReads(database, statements)
                if database and database != ":memory:" else None)
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return PgHotReads(conninfo, statements)
    return None


class SqliteHotReads:
    def __init__(self, path: str, statements: dict[str, Select[Any]]) -> None:
        self.path = path
        dialect = sqlite.dialect(paramstyle="named")
        self._sql = {name: str(stmt.compile(dialect=dialect))
                     for name, stmt in statements.items()}
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    async def one(self, name: str, /, **params: Any) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = (
            self._connection().execute(self._sql[name], params).fetchone())
        return row

    async def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None


class PgHotReads:
    def __init__(self, conninfo: str, statements: dict[str, Select[Any]],
                 connections: int = PG_CONNECTIONS) -> None:
        self.conninfo = conninfo
        dialect = postgresql.dialect(paramstyle="pyformat")  # type: ignore[no-untyped-call]
        self._sql = {name: str(stmt.compile(dialect=dialect))
                     for name, stmt in statements.items()}
        self._size = connections
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._pid = 0

    def _for_this_process(self) -> asyncio.Semaphore:
        if self._slots is None or self._pid != os.getpid():
            # Connections of a parent process are never touched (nor closed: that would
            # end the parent's session on the shared socket); each process opens its own.
            self._idle, self._slots, self._pid = [], asyncio.Semaphore(self._size), os.getpid()
        return self._slots

    async def one(self, name: str, /, **params: Any) -> tuple[Any, ...] | None:
        import psycopg

        async with self._for_this_process():
            try:
                conn = (self._idle.pop() if self._idle else
                        await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True,
                                                              connect_timeout=5))
            except psycopg.Error as e:
                raise Unavailable(reason="index unreachable") from e
            try:
                cursor = await conn.execute(self._sql[name], params, prepare=True)
                row = await cursor.fetchone()
            except psycopg.Error as e:
                with contextlib.suppress(Exception):
                    await conn.close()
                if isinstance(e, psycopg.OperationalError):
                    raise Unavailable(reason="index unreachable") from e
                raise
            self._idle.append(conn)
            return row

    async def close(self) -> None:
        if self._pid == os.getpid():
            idle, self._idle = self._idle, []
            for conn in idle:
                with contextlib.suppress(Exception):
                    await conn.close()
