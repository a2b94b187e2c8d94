"""A mirror's record of upstream release channels: per (repository, tag, identity), the
digest that identity was last given. Channel tags are revalidated upstream on every pull
with the client's identity; this record serves only when no upstream answers
(stale-if-error), and marks the tag as a channel so it is never cached as one tag for all."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from stablemirror.index.db import Database
from stablemirror.index.schema_releases import mirror_channel_resolutions as t


class MirrorChannelTags:
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
