"""The queries every pull runs, on a plain sqlite3 connection (Database.read_row).

Measured (bench/RESULTS.md): about half of a manifest GET went into SQLAlchemy building,
checking out and wrapping a query whose SQLite execution took ~3% of it. The statements
are still built with SQLAlchemy, once, by their owners; each is compiled here on first
use and only its execution skips the engine. One connection per process (opened lazily,
after the fork), in autocommit, so every read sees the latest commit; WAL readers never
wait for writers.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects import sqlite


class SqliteHotReads:
    def __init__(self, path: str) -> None:
        self.path = path
        self._dialect = sqlite.dialect(paramstyle="named")
        # compiled text by statement; the statement is kept beside its text so its id()
        # is never reused meanwhile
        self._compiled: dict[int, tuple[Select[Any], str]] = {}
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def row(self, stmt: Select[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
        entry = self._compiled.get(id(stmt))
        if entry is None:
            entry = self._compiled[id(stmt)] = (stmt, str(stmt.compile(dialect=self._dialect)))
        row: tuple[Any, ...] | None = (
            self._connection().execute(entry[1], params).fetchone())
        return row

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
