"""The queries every pull runs, on PostgreSQL, from the event loop (no thread hop).

Measured (bench/replicas.py): a manifest GET through the engine cost ~1.5 ms of CPU, most
of it SQLAlchemy building and wrapping the query in a pool thread, and the GIL handed back
and forth between that thread and the event loop; psycopg's async connections still cost
~170 us per query. These statements are compiled from the SQLAlchemy schema once and run
on asyncpg connections (its protocol is compiled; each statement is prepared once per
connection), in autocommit (every read sees the latest commit).

The connections are part of the process's budget (`database.*`, index/db.py): at most
`size` of them, opened lazily (after the fork), each used by one query at a time; a query
waits at most `timeout` seconds for one. A connection that fails is dropped, and a query
on an idle connection the server closed (a restart) is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url

from stablemirror.oci.errors import Unavailable

# A point lookup that takes this long means the server is stuck: the request gets a 503.
QUERY_SECONDS = 30.0

# The server is gone, restarting or refusing connections: nothing about the query. (An
# idle connection the server terminated can also surface as an InternalClientError.)
CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                     asyncpg.InternalClientError,
                     asyncpg.exceptions.OperatorInterventionError,
                     asyncpg.exceptions.ConnectionDoesNotExistError)


def _unavailable(e: BaseException) -> Unavailable:
    err = Unavailable(reason="index", cause=type(e).__name__)
    err.headers["Retry-After"] = "1"
    return err


class PostgresReads:
    def __init__(self, url: str, size: int, timeout: float) -> None:
        parsed = make_url(url)
        self.server_settings = {k: str(v) for k, v in parsed.query.items()
                                if k == "application_name"}
        self.dsn = parsed.set(drivername="postgresql", query={}).render_as_string(
            hide_password=False)
        self.size = size
        self.timeout = timeout
        self._dialect = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
        self._sql: dict[int, tuple[Select[Any], str, tuple[str, ...]]] = {}
        self._idle: list[asyncpg.Connection] = []
        self._slots: asyncio.Semaphore | None = None

    def _compiled(self, stmt: Select[Any]) -> tuple[str, tuple[str, ...]]:
        entry = self._sql.get(id(stmt))
        if entry is None:
            compiled = stmt.compile(dialect=self._dialect)
            entry = (stmt, str(compiled), tuple(compiled.positiontup or ()))
            self._sql[id(stmt)] = entry  # keeps stmt alive, so its id stays its own
        return entry[1], entry[2]

    async def one(self, stmt: Select[Any], **params: Any) -> tuple[Any, ...] | None:
        sql, order = self._compiled(stmt)
        args = [params[name] for name in order]
        if self._slots is None:  # made in the running loop, after the fork
            self._slots = asyncio.Semaphore(self.size)
        if self._slots.locked():  # wait_for costs a task: only when there is a wait
            try:
                await asyncio.wait_for(self._slots.acquire(), self.timeout)
            except TimeoutError as e:
                raise _unavailable(e) from None
        else:
            await self._slots.acquire()
        try:
            while self._idle and self._idle[-1].is_closed():
                self._idle.pop()
            for fresh in (not self._idle, True):
                conn = self._idle.pop() if not fresh else await self._connect()
                try:
                    row = await conn.fetchrow(sql, *args, timeout=QUERY_SECONDS)
                except (*CONNECTION_ERRORS, TimeoutError) as e:
                    conn.terminate()
                    if fresh:
                        raise _unavailable(e) from e
                    continue  # an idle connection from before a restart: once more
                except BaseException:
                    conn.terminate()
                    raise
                self._idle.append(conn)
                return None if row is None else tuple(row)
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self.dsn, timeout=self.timeout, server_settings=self.server_settings)
            return conn
        except (*CONNECTION_ERRORS, TimeoutError) as e:
            raise _unavailable(e) from e

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
