"""Fetch leases in the shared index: which replica transfers a blob from upstream.

A lease has an owner (the replica's advertised URL) and an expiry; the owner extends it
while its transfer runs and, once the transfer ended, leaves it for a while as "ask me"
(the blob is in its store). An expired row is free: the next claimer takes it over, so a
killed replica holds nothing for longer than one lease period.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, and_, delete, or_, select, update

from stablemirror.index import schema_mirror as m
from stablemirror.index.db import Database

LEASES = m.fetch_leases


class FetchLeases:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, digest: str, owner: str, seconds: float) -> str:
        """Take the lease if it is free, expired or ours; return whoever holds it now."""
        def run(c: Connection) -> str:
            now = time.time()
            taken = c.execute(
                update(LEASES)
                .where(LEASES.c.digest == digest,
                       or_(LEASES.c.expires_at < now, LEASES.c.owner == owner))
                .values(owner=owner, expires_at=now + seconds)).rowcount
            if taken:
                return owner
            # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT
            inserted = c.execute(
                self.db.insert(LEASES)
                .values(digest=digest, owner=owner, expires_at=now + seconds)
                .on_conflict_do_nothing(index_elements=["digest"])
                .returning(LEASES.c.digest)).first()
            if inserted is not None:
                return owner
            holder = c.execute(select(LEASES.c.owner)
                               .where(LEASES.c.digest == digest)).scalar()
            return str(holder) if holder is not None else owner
        return await self.db.write(run)

    async def extend(self, digest: str, owner: str, seconds: float) -> bool:
        """Push the expiry on, only while `owner` still holds the lease."""
        def run(c: Connection) -> bool:
            return bool(c.execute(
                update(LEASES)
                .where(LEASES.c.digest == digest, LEASES.c.owner == owner)
                .values(expires_at=time.time() + seconds)).rowcount)
        return await self.db.write(run)

    async def release(self, digest: str, owner: str) -> None:
        await self.db.write(lambda c: c.execute(
            delete(LEASES).where(LEASES.c.digest == digest, LEASES.c.owner == owner)))

    async def holder(self, digest: str) -> str | None:
        def run(c: Connection) -> str | None:
            value = c.execute(select(LEASES.c.owner).where(
                and_(LEASES.c.digest == digest, LEASES.c.expires_at >= time.time()))).scalar()
            return None if value is None else str(value)
        return await self.db.read(run)

    async def prune(self) -> int:
        """Drop expired rows (they are free anyway; this keeps the table small)."""
        return await self.db.write(lambda c: c.execute(
            delete(LEASES).where(LEASES.c.expires_at < time.time())).rowcount)
