"""SQL for mirror state (index/schema_mirror.py) on the shared Database."""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete, func, select

from stablemirror.index import schema as s
from stablemirror.index import schema_mirror as m
from stablemirror.index.db import Database
from stablemirror.index.schema_releases import mirror_channel_resolutions as t


class MirrorChannelTags:
    """A mirror's record of upstream release channels (releases/mirror_store.py says what
    it is for)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def is_channel(self, repository: str, tag: str) -> bool:
        q = select(t.c.digest).where(t.c.repository == repository, t.c.tag == tag).limit(1)
        return await self.db.read(lambda c: c.execute(q).first()) is not None

    async def lookup(self, repository: str, tag: str, identity: str) -> str | None:
        q = select(t.c.digest).where(t.c.repository == repository, t.c.tag == tag,
                                     t.c.identity == identity)
        return await self.db.read(lambda c: c.execute(q).scalar())

    async def remember(self, repository: str, tag: str, identity: str, digest: str) -> None:
        if await self.lookup(repository, tag, identity) == digest:
            return  # unchanged: a read, not a write, on the common pull
        now = time.time()
        stmt = (self.db.insert(t)
                .values(repository=repository, tag=tag, identity=identity, digest=digest,
                        resolved_at=now)
                .on_conflict_do_update(index_elements=["repository", "tag", "identity"],
                                       set_={"digest": digest, "resolved_at": now}))
        await self.db.write(lambda c: c.execute(stmt))

    async def forget(self, repository: str, tag: str) -> None:
        await self.db.write(lambda c: c.execute(
            delete(t).where(t.c.repository == repository, t.c.tag == tag)))

    async def channels(self, repository: str) -> list[str]:
        q = select(t.c.tag).where(t.c.repository == repository).distinct()
        return sorted(await self.db.read(lambda c: list(c.execute(q).scalars())))


class MirrorIndex:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.channel_tags = MirrorChannelTags(db)

    async def tag_checked_at(self, repository: str, tag: str) -> float | None:
        q = (select(m.mirror_tags.c.checked_at)
             .join(s.repositories, s.repositories.c.id == m.mirror_tags.c.repo_id)
             .where(s.repositories.c.name == repository, m.mirror_tags.c.name == tag))
        return await self.db.read(lambda c: c.execute(q).scalar())

    async def mark_tag_checked(self, repository: str, tag: str) -> None:
        now = time.time()

        def run(c: Connection) -> None:
            repo_id = c.execute(select(s.repositories.c.id)
                                .where(s.repositories.c.name == repository)).scalar()
            if repo_id is None:
                return
            c.execute(self.db.insert(m.mirror_tags)
                      .values(repo_id=repo_id, name=tag, checked_at=now)
                      .on_conflict_do_update(index_elements=["repo_id", "name"],
                                             set_={"checked_at": now}))

        await self.db.write(run)

    async def is_negative(self, repository: str, reference: str) -> bool:
        q = select(m.mirror_negative.c.expires_at).where(
            m.mirror_negative.c.repository == repository,
            m.mirror_negative.c.reference == reference)
        expires = await self.db.read(lambda c: c.execute(q).scalar())
        return expires is not None and expires > time.time()

    async def remember_negative(self, repository: str, reference: str, ttl: float) -> None:
        expires = time.time() + ttl
        await self.db.write(lambda c: c.execute(
            self.db.insert(m.mirror_negative)
            .values(repository=repository, reference=reference, expires_at=expires)
            .on_conflict_do_update(index_elements=["repository", "reference"],
                                   set_={"expires_at": expires})))

    async def touch_blobs(self, accessed: dict[str, float]) -> None:
        if not accessed:
            return
        rows = [{"digest": d, "last_access": t} for d, t in accessed.items()]
        stmt = self.db.insert(m.blob_access)
        stmt = stmt.on_conflict_do_update(index_elements=["digest"],
                                          set_={"last_access": stmt.excluded.last_access})
        await self.db.write(lambda c: c.execute(stmt, rows))

    async def eviction_candidates(self, limit: int) -> list[tuple[str, int, float]]:
        """Cached blobs, least recently used first: (digest, size, last access)."""
        last = func.coalesce(m.blob_access.c.last_access, s.blobs.c.pushed_at)
        q = (select(s.blobs.c.digest, s.blobs.c.size, last)
             .outerjoin(m.blob_access, m.blob_access.c.digest == s.blobs.c.digest)
             .order_by(last).limit(limit))
        rows = await self.db.read(lambda c: c.execute(q).all())
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def blob_repositories(self, digest: str) -> list[str]:
        q = (select(s.repositories.c.name)
             .join(s.repo_blobs, s.repo_blobs.c.repo_id == s.repositories.c.id)
             .where(s.repo_blobs.c.digest == digest))
        return await self.db.read(lambda c: list(c.execute(q).scalars()))

    async def total_blob_bytes(self) -> int:
        q = select(func.coalesce(func.sum(s.blobs.c.size), 0))
        return int(await self.db.read(lambda c: c.execute(q).scalar() or 0))

    async def forget_blob(self, digest: str, idle_since: float) -> bool:
        """Drop a cached blob's rows unless it was served or pushed after `idle_since`."""
        def run(c: Connection) -> bool:
            locked = c.execute(select(s.blobs.c.pushed_at).where(s.blobs.c.digest == digest)
                               .with_for_update()).first()
            if locked is None or locked[0] >= idle_since:
                return False
            access = c.execute(select(m.blob_access.c.last_access)
                               .where(m.blob_access.c.digest == digest)).scalar()
            if access is not None and access >= idle_since:
                return False
            c.execute(delete(s.repo_blobs).where(s.repo_blobs.c.digest == digest))
            c.execute(delete(s.blobs).where(s.blobs.c.digest == digest))
            c.execute(delete(m.blob_access).where(m.blob_access.c.digest == digest))
            return True

        return await self.db.write(run)
