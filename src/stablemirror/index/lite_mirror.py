"""Mirror state on sqlite3 (index/mirror_sql.py's MirrorIndex and releases/mirror_store.py's
MirrorChannelTags, same rows), for the stdlib-sqlite3 backend (index/lite_db.py)."""

from __future__ import annotations

import sqlite3
import time

from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_index import repo_id


class LiteChannelTags:
    """Per (repository, tag, identity) the digest an upstream release channel gave that
    identity (releases/mirror_store.py says what it is for)."""

    def __init__(self, db: LiteDatabase) -> None:
        self.db = db

    async def is_channel(self, repository: str, tag: str) -> bool:
        return await self.db.read(lambda c: c.execute(
            "SELECT digest FROM mirror_channel_resolutions WHERE repository = ? AND tag = ? "
            "LIMIT 1", (repository, tag)).fetchone()) is not None

    async def lookup(self, repository: str, tag: str, identity: str) -> str | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT digest FROM mirror_channel_resolutions WHERE repository = ? AND tag = ? "
            "AND identity = ?", (repository, tag, identity)).fetchone())
        return None if row is None else str(row[0])

    async def remember(self, repository: str, tag: str, identity: str, digest: str) -> None:
        if await self.lookup(repository, tag, identity) == digest:
            return  # unchanged: a read, not a write, on the common pull
        now = time.time()
        await self.db.write(lambda c: c.execute(
            "INSERT INTO mirror_channel_resolutions (repository, tag, identity, digest, "
            "resolved_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (repository, tag, identity) "
            "DO UPDATE SET digest = ?, resolved_at = ?",
            (repository, tag, identity, digest, now, digest, now)))

    async def forget(self, repository: str, tag: str) -> None:
        await self.db.write(lambda c: c.execute(
            "DELETE FROM mirror_channel_resolutions WHERE repository = ? AND tag = ?",
            (repository, tag)))

    async def channels(self, repository: str) -> list[str]:
        return sorted(await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT DISTINCT tag FROM mirror_channel_resolutions WHERE repository = ?",
            (repository,))]))


class LiteMirrorIndex:
    def __init__(self, db: LiteDatabase) -> None:
        self.db = db
        self.channel_tags = LiteChannelTags(db)

    async def tag_checked_at(self, repository: str, tag: str) -> float | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT t.checked_at FROM mirror_tags t JOIN repositories r ON r.id = t.repo_id "
            "WHERE r.name = ? AND t.name = ?", (repository, tag)).fetchone())
        return None if row is None else float(row[0])

    async def mark_tag_checked(self, repository: str, tag: str) -> None:
        now = time.time()

        def run(c: sqlite3.Connection) -> None:
            rid = repo_id(c, repository)
            if rid is None:
                return
            c.execute("INSERT INTO mirror_tags (repo_id, name, checked_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (repo_id, name) DO UPDATE SET checked_at = ?",
                      (rid, tag, now, now))

        await self.db.write(run)

    async def is_negative(self, repository: str, reference: str) -> bool:
        row = await self.db.read(lambda c: c.execute(
            "SELECT expires_at FROM mirror_negative WHERE repository = ? AND reference = ?",
            (repository, reference)).fetchone())
        return row is not None and row[0] > time.time()

    async def remember_negative(self, repository: str, reference: str, ttl: float) -> None:
        expires = time.time() + ttl
        await self.db.write(lambda c: c.execute(
            "INSERT INTO mirror_negative (repository, reference, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (repository, reference) DO UPDATE SET expires_at = ?",
            (repository, reference, expires, expires)))

    async def touch_blobs(self, accessed: dict[str, float]) -> None:
        if not accessed:
            return
        rows = list(accessed.items())
        await self.db.write(lambda c: c.executemany(
            "INSERT INTO blob_access (digest, last_access) VALUES (?, ?) "
            "ON CONFLICT (digest) DO UPDATE SET last_access = excluded.last_access", rows))

    async def eviction_candidates(self, limit: int) -> list[tuple[str, int, float]]:
        """Cached blobs, least recently used first: (digest, size, last access)."""
        rows = await self.db.read(lambda c: c.execute(
            "SELECT b.digest, b.size, coalesce(a.last_access, b.pushed_at) AS last "
            "FROM blobs b LEFT OUTER JOIN blob_access a ON a.digest = b.digest "
            "ORDER BY last LIMIT ?", (limit,)).fetchall())
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def blob_repositories(self, digest: str) -> list[str]:
        return await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT r.name FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id "
            "WHERE rb.digest = ?", (digest,))])

    async def total_blob_bytes(self) -> int:
        row = await self.db.read(lambda c: c.execute(
            "SELECT coalesce(sum(size), 0) FROM blobs").fetchone())
        return int(row[0] or 0)

    async def forget_blob(self, digest: str, idle_since: float) -> bool:
        """Drop a cached blob's rows unless it was served or pushed after `idle_since`."""
        def run(c: sqlite3.Connection) -> bool:
            # The write transaction holds the writer lock: nothing lands between the checks.
            pushed = c.execute("SELECT pushed_at FROM blobs WHERE digest = ?",
                               (digest,)).fetchone()
            if pushed is None or pushed[0] >= idle_since:
                return False
            access = c.execute("SELECT last_access FROM blob_access WHERE digest = ?",
                               (digest,)).fetchone()
            if access is not None and access[0] >= idle_since:
                return False
            c.execute("DELETE FROM repo_blobs WHERE digest = ?", (digest,))
            c.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
            c.execute("DELETE FROM blob_access WHERE digest = ?", (digest,))
            return True

        return await self.db.write(run)
