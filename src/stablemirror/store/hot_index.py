"""What the hot tier knows across worker processes: one small SQLite file under the hot dir.

    hits(digest, times, last, too_big)  the last `promote_after` cold-read times of blobs
                                        not (yet) hot; `too_big`: never promote it
    hot(digest, size, score, at)        the hot copies: decayed hit score as of `at`
    gone(digest, at)                    blobs deleted through the tier (GC, quarantine), so
                                        a promotion that started before cannot bring one back

WAL mode, `synchronous=NORMAL` (a cache: a power loss may lose the last hits, never a
blob), short transactions (`BEGIN IMMEDIATE`), a 1 s busy timeout. Callers are the event
loop (one small transaction per cold read, one per second of hot hits) and the evictor's
thread; a lock keeps them off the connection at the same time. The connection is opened
lazily in each process (the workers fork after the app is built).

Score (see docs/storage.md, "Hot tier"): each hit adds 1 and the sum halves every
`window` seconds (LRFU-style exponential decay), so frequency and recency are one number:
score(now) = score * 2 ** (-(now - at) / window).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from stablemirror.files.sqlite_wal import ensure_wal

GONE_KEEP_SECONDS = 7 * 86400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (digest TEXT PRIMARY KEY, times TEXT NOT NULL,
                                 last REAL NOT NULL, too_big INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS hits_last ON hits (last);
CREATE TABLE IF NOT EXISTS hot (digest TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                score REAL NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gone (digest TEXT PRIMARY KEY, at REAL NOT NULL);
"""


def decayed(score: float, at: float, now: float, half_life: float) -> float:
    return float(score * 2.0 ** (-max(0.0, now - at) / half_life))


class HotIndex:
    def __init__(self, path: Path, window: float, promote_after: int) -> None:
        self.path = path
        self.window = window
        self.promote_after = promote_after
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        # A connection inherited across fork is never used or closed in the child (closing
        # it would drop the child's own POSIX locks on the file): kept referenced here.
        self._inherited: list[sqlite3.Connection] = []

    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:
                self._inherited.append(self._conn)
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                   check_same_thread=False)
            # bounded retries: the workers of a server open a new hot index together, and
            # a second WAL switch is refused at once ("database is locked")
            ensure_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            window = self.window
            conn.create_function("decayed", 3, lambda s, a, n: decayed(s, a, n, window),
                                 deterministic=True)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _write(self, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # -- cold reads: the sliding window -----------------------------------------------------
    def cold_hit(self, digest: str, now: float) -> tuple[int, bool]:
        """Record a cold read; (hits within the window including this one, too big)."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT times, too_big FROM hits WHERE digest = ?",
                                 (digest,)).fetchone()
                times = [float(t) for t in row[0].split()] if row else []
                times = [t for t in times if t > now - self.window][-(self.promote_after - 1):]
                times = ([*times, now] if self.promote_after > 1 else [now])
                db.execute("INSERT INTO hits (digest, times, last, too_big) VALUES (?, ?, ?, ?)"
                           " ON CONFLICT (digest) DO UPDATE SET times = excluded.times,"
                           " last = excluded.last",
                           (digest, " ".join(repr(t) for t in times), now, 0))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(times), bool(row[1]) if row else False

    def mark_too_big(self, digest: str) -> None:
        self._write([("UPDATE hits SET too_big = 1 WHERE digest = ?", (digest,))])

    # -- hot copies ---------------------------------------------------------------------------
    def admit(self, digest: str, size: int, since: float, now: float) -> bool:
        """Record a new hot copy, seeded with its window's hits; False (nothing recorded)
        if the blob was deleted through the tier at or after `since`."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = db.execute("SELECT at FROM gone WHERE digest = ?", (digest,)).fetchone()
                if gone is not None and gone[0] >= since:
                    db.execute("ROLLBACK")
                    return False
                row = db.execute("SELECT times FROM hits WHERE digest = ?",
                                 (digest,)).fetchone()
                times = [float(t) for t in row[0].split()] if row else [now]
                score = sum(decayed(1.0, t, now, self.window) for t in times)
                db.execute("INSERT OR REPLACE INTO hot (digest, size, score, at) "
                           "VALUES (?, ?, ?, ?)", (digest, size, score, now))
                db.execute("DELETE FROM hits WHERE digest = ?", (digest,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def deleted_since(self, digest: str, since: float) -> bool:
        with self._lock:
            row = self._db().execute("SELECT at FROM gone WHERE digest = ?",
                                     (digest,)).fetchone()
        return row is not None and row[0] >= since

    def hot_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """Add (count, latest time) hits to hot copies: decay to `latest`, add `count`."""
        self._write(("UPDATE hot SET score = decayed(score, at, ?) + ?, at = ? "
                     "WHERE digest = ?", (latest, count, latest, digest))
                    for digest, (count, latest) in hits.items())

    def forget(self, digest: str, now: float) -> None:
        """The blob was deleted: no hot copy may be (re)admitted for a promotion older."""
        self._write([("INSERT OR REPLACE INTO gone (digest, at) VALUES (?, ?)", (digest, now)),
                     ("DELETE FROM hot WHERE digest = ?", (digest,)),
                     ("DELETE FROM hits WHERE digest = ?", (digest,))])

    def drop(self, digest: str) -> None:
        self._write([("DELETE FROM hot WHERE digest = ?", (digest,))])

    def hot_rows(self, now: float) -> list[tuple[str, int, float]]:
        """(digest, size, score now) of every hot copy, lowest score first."""
        with self._lock:
            rows = self._db().execute("SELECT digest, size, decayed(score, at, ?) AS s "
                                      "FROM hot ORDER BY s, digest", (now,)).fetchall()
        return [(str(d), int(size), float(s)) for d, size, s in rows]

    def hot_bytes(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COALESCE(SUM(size), 0) FROM hot")
                       .fetchone()[0])

    def reconcile(self, on_disk: Mapping[str, int], now: float) -> None:
        """Make `hot` name exactly the files on disk (a crash between a rename and its
        row, or a hot dir changed by hand); prune old hits and tombstones."""
        with self._lock:
            known = {d for (d,) in self._db().execute("SELECT digest FROM hot")}
        self._write([
            *(("DELETE FROM hot WHERE digest = ?", (d,)) for d in known - on_disk.keys()),
            *(("INSERT OR IGNORE INTO hot (digest, size, score, at) VALUES (?, ?, 0, ?)",
               (d, size, now)) for d, size in on_disk.items() if d not in known),
            ("DELETE FROM hits WHERE last < ? AND too_big = 0", (now - self.window,)),
            ("DELETE FROM gone WHERE at < ?", (now - GONE_KEEP_SECONDS,)),
        ])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
