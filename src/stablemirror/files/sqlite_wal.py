"""SQLite's WAL mode, switched on safely by processes that open one database at once (the
index, the hot tier's index): the switch needs an exclusive lock, and SQLite answers a
second switcher with "database is locked" at once, whatever the busy timeout."""

from __future__ import annotations

import sqlite3
import time


def ensure_wal(conn: sqlite3.Connection) -> None:
    """Put the database in WAL mode unless it already is. The switch needs an exclusive
    lock and SQLite answers SQLITE_BUSY at once, without its busy handler, when another
    connection switches at the same moment, which two workers forked together do: so read
    the mode first, and retry a bounded number of times (at most ~5 s)."""
    for attempt in range(50):
        try:
            row = conn.execute("PRAGMA journal_mode").fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if attempt == 49 or not any(w in str(err) for w in ("locked", "busy")):
                raise
            time.sleep(0.1)
