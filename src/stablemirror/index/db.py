"""Database plumbing shared by every SQL-backed component (index, auth, audit, jobs).

Queries are plain synchronous SQLAlchemy run off the event loop, except SQLite reads:
in WAL mode a reader never waits for a writer and a point lookup takes microseconds,
so they run inline, which is what makes manifest GETs cheap. SQLite writers take the
lock up front (BEGIN IMMEDIATE) so concurrent worker processes queue instead of failing,
and one writer thread per process keeps them in order.

On PostgreSQL a process holds at most `pool_size + max_overflow` connections however many
clients it serves: half of `pool_size` serve the pull path's reads from the event loop
(`read_row`, index/pg_reads.py), the other queries run in as many threads as the engine
has connections, so further requests queue for a thread rather than open a connection. A
connection not free within `timeout` seconds, like a server that is down or restarting,
is a clean 503 UNAVAILABLE (Retry-After) for the request at hand (docs/jobs.md); the
first failure after a PostgreSQL restart invalidates the pooled connections, so the next
requests reconnect.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from stablemirror.files.sqlite_wal import ensure_wal
from stablemirror.index.hot_reads import SqliteHotReads
from stablemirror.index.pool_size import PoolSize
from stablemirror.oci.errors import StorageFull, Unavailable

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert

    from stablemirror.index.pg_reads import PostgresReads

T = TypeVar("T")


def _is_disk_full(e: OperationalError) -> bool:
    """SQLite's SQLITE_FULL or PostgreSQL's disk_full (SQLSTATE 53100)."""
    orig = e.orig
    return (getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or getattr(orig, "sqlstate", None) == "53100")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    ensure_wal(dbapi_conn)  # bounded retries: workers that start together race for it
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # No memory-mapped reads of the database file: a page fault is SIGBUS where a read()
    # is an error (the -shm index is safe: SQLite allocates its pages before mapping them).
    cur.execute("PRAGMA mmap_size=0")
    cur.close()


def sqlite_engine(url: str, begin: str | None) -> Engine:
    """An SQLite engine; with `begin`, transactions start with that statement (we issue
    BEGIN ourselves instead of the driver's implicit, DML-only one)."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    if begin is not None:
        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)
    return engine


def make_engines(url: str, pool: PoolSize | None = None
                 ) -> tuple[Engine, Engine, Engine]:
    """(reader, writer, snapshot) engines for `url`; one engine for PostgreSQL."""
    if not url.startswith("sqlite"):
        pool = pool or PoolSize()
        # No ping before each use (a round trip per query): a connection the server dropped
        # fails its query, which invalidates the whole pool (SQLAlchemy does on a
        # disconnect), and a read is then retried once on a fresh connection.
        engine = create_engine(url, pool_size=max(1, pool.size - pool.hot),
                               max_overflow=pool.max_overflow,
                               pool_timeout=pool.timeout)
        # Reads are single statements or tolerate one snapshot per statement (as SQLite's
        # reads do): autocommit spares each of them a BEGIN and a COMMIT round trip.
        return engine.execution_options(isolation_level="AUTOCOMMIT"), engine, engine
    # Writers take the lock up front; a snapshot is a deferred transaction, which in WAL
    # mode becomes a read transaction at its first SELECT and never blocks writers.
    return (sqlite_engine(url, None), sqlite_engine(url, "BEGIN IMMEDIATE"),
            sqlite_engine(url, "BEGIN"))


def _unreachable(e: Exception) -> bool:
    """The database cannot be reached or dropped the connection (a restart, a failover),
    or no pooled connection came free in time: nothing about the request itself."""
    if isinstance(e, PoolTimeout | InterfaceError):
        return True
    if isinstance(e, OperationalError) and not _is_disk_full(e):
        return True
    return isinstance(e, DBAPIError) and e.connection_invalidated


def _postgresql_insert() -> Callable[..., PostgresInsert]:
    """The PostgreSQL dialect is imported for a PostgreSQL index only (docs/footprint.md)."""
    from sqlalchemy.dialects.postgresql import insert

    return insert


class Database:
    def __init__(self, url: str, pool: PoolSize | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.pool = pool or PoolSize()
        self.reader, self.writer, self._snapshot = make_engines(url, self.pool)
        # As many query threads as connections: more clients wait for a thread, not a
        # connection of their own (the snapshot reads run in asyncio's default threads).
        threads = max(1, self.pool.size - self.pool.hot) + self.pool.max_overflow
        self._pool = ThreadPoolExecutor(1 if self.is_sqlite else threads,
                                        thread_name_prefix="db")
        self.insert = sqlite.insert if self.is_sqlite else _postgresql_insert()
        self.hot: PostgresReads | None = None
        if not self.is_sqlite and self.pool.hot > 0:
            from stablemirror.index.pg_reads import PostgresReads  # asyncpg: PostgreSQL only

            self.hot = PostgresReads(url, self.pool.hot, self.pool.timeout)
        # SQLite: read_row skips the engine too (index/hot_reads.py), on a file database
        database = self.reader.url.database if self.is_sqlite else None
        self._sqlite_rows = (SqliteHotReads(database)
                             if database and database != ":memory:" else None)

    async def read_row(self, stmt: Select[Any], **params: Any) -> tuple[Any, ...] | None:
        """One row of a statement with bind parameters, the cheapest way the backend has:
        inline on SQLite, from the event loop on PostgreSQL. For the reads every pull runs;
        `stmt` should be built once (it is compiled once per Database)."""
        if self.hot is not None:
            return await self.hot.one(stmt, **params)
        if self._sqlite_rows is not None:
            return self._sqlite_rows.row(stmt, params)
        row = await self.read(lambda c: c.execute(stmt, params).first())
        return None if row is None else tuple(row)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        if self.is_sqlite:
            with self.reader.connect() as conn:
                return fn(conn)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one transaction; everything it writes commits together or not at all."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tx, fn)

    async def snapshot(self, fn: Callable[[Connection], T]) -> T:
        """Run the reads of `fn` against one consistent snapshot, in a thread, without
        blocking writers (WAL on SQLite, REPEATABLE READ on PostgreSQL). For long scans
        that must not see a commit land halfway, such as verifying the audit chain."""
        def run() -> T:
            engine = self._snapshot
            options = {} if self.is_sqlite else {"isolation_level": "REPEATABLE READ"}
            with engine.connect().execution_options(**options) as conn, conn.begin():
                return fn(conn)
        return await asyncio.to_thread(run)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        for first in (True, False):
            try:
                with self.reader.connect() as conn:
                    return fn(conn)
            except DBAPIError as e:
                if first and e.connection_invalidated:
                    continue  # a pooled connection from before a server restart
                if _unreachable(e):
                    raise self._unavailable(e) from e
                raise
            except PoolTimeout as e:
                raise self._unavailable(e) from e
        raise AssertionError("unreachable")

    def _tx(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self.writer.begin() as conn:
                return fn(conn)
        except OperationalError as e:
            if _is_disk_full(e):
                raise StorageFull(reason="index") from e
            if self.is_sqlite:
                raise
            raise self._unavailable(e) from e
        except (PoolTimeout, DBAPIError) as e:
            if self.is_sqlite or not _unreachable(e):
                raise
            raise self._unavailable(e) from e

    @staticmethod
    def _unavailable(e: Exception) -> Unavailable:
        err = Unavailable(reason="index", cause=type(e).__name__)
        err.headers["Retry-After"] = "1"
        return err

    async def close(self) -> None:
        if self.hot is not None:
            await self.hot.close()
        if self._sqlite_rows is not None:
            self._sqlite_rows.close()
        self._pool.shutdown(wait=True)
        self.reader.dispose()
        self.writer.dispose()
        self._snapshot.dispose()
