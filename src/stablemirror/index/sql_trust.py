"""SQL for the integrity and trust tables (index/schema_trust.py), plus the few read-only
questions they ask of the core tables (which repositories hold a blob, which indexes list a
manifest)."""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete, select, update

from stablemirror.index import schema as s
from stablemirror.index import schema_trust as t
from stablemirror.index.db import Database
from stablemirror.index.trust_rows import OK, QUARANTINED, IntegrityRow, PolicyKeyRow, PolicyRow

__all__ = ["OK", "QUARANTINED", "IntegrityRow", "PolicyKeyRow", "PolicyRow", "SqlTrustIndex"]

class SqlTrustIndex:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- policies ------------------------------------------------------------------------------
    async def list_policies(self) -> list[PolicyRow]:
        def run(c: Connection) -> list[PolicyRow]:
            keys: dict[str, list[PolicyKeyRow]] = {}
            k = t.trust_policy_keys
            for row in c.execute(select(k.c.pattern, k.c.role, k.c.key_id, k.c.public_key,
                                        k.c.label).order_by(k.c.role, k.c.key_id)):
                keys.setdefault(row[0], []).append(PolicyKeyRow(row[1], row[2], row[3], row[4]))
            p = t.trust_policies
            rows = c.execute(select(p.c.pattern, p.c.mode, p.c.updated_at).order_by(p.c.pattern))
            return [PolicyRow(r[0], r[1], r[2], tuple(keys.get(r[0], ()))) for r in rows]

        return await self.db.read(run)

    async def set_policy(self, pattern: str, mode: str, keys: list[PolicyKeyRow]) -> None:
        """Create or replace the policy for `pattern` (its keys are replaced too)."""
        now = time.time()

        def run(c: Connection) -> None:
            c.execute(
                self.db.insert(t.trust_policies)
                .values(pattern=pattern, mode=mode, updated_at=now)
                .on_conflict_do_update(index_elements=["pattern"],
                                       set_={"mode": mode, "updated_at": now})
            )
            c.execute(delete(t.trust_policy_keys).where(t.trust_policy_keys.c.pattern == pattern))
            if keys:
                c.execute(t.trust_policy_keys.insert(), [
                    {"pattern": pattern, "role": k.role, "key_id": k.key_id,
                     "public_key": k.public_key, "label": k.label} for k in keys])

        await self.db.write(run)

    async def delete_policy(self, pattern: str) -> bool:
        def run(c: Connection) -> bool:
            c.execute(delete(t.trust_policy_keys).where(t.trust_policy_keys.c.pattern == pattern))
            r = c.execute(delete(t.trust_policies).where(t.trust_policies.c.pattern == pattern))
            return r.rowcount > 0

        return await self.db.write(run)

    async def parent_indexes(self, repository: str, digest: str) -> list[str]:
        """Digests of the image indexes in `repository` that list manifest `digest`."""
        r, m = s.repositories, s.manifest_refs
        q = (select(m.c.manifest_digest).join(r, r.c.id == m.c.repo_id)
             .where(r.c.name == repository, m.c.ref_digest == digest, m.c.kind == "manifest")
             .limit(16))
        return await self.db.read(lambda c: list(c.execute(q).scalars()))

    # -- blob integrity ----------------------------------------------------------------------------
    @staticmethod
    def _row(row: tuple[object, ...] | None) -> IntegrityRow | None:
        return None if row is None else IntegrityRow(*row)  # type: ignore[arg-type]

    def _cols(self) -> tuple[object, ...]:
        b = t.blob_integrity
        return (b.c.digest, b.c.state, b.c.size, b.c.verified_at, b.c.stale_at,
                b.c.quarantined_at, b.c.quarantine_path, b.c.detail)

    async def integrity(self, digest: str) -> IntegrityRow | None:
        q = select(*self._cols()).where(t.blob_integrity.c.digest == digest)  # type: ignore[call-overload]
        return await self.db.read(lambda c: self._row(c.execute(q).first()))

    async def quarantined(self) -> list[IntegrityRow]:
        b = t.blob_integrity
        q = select(*self._cols()).where(b.c.state == QUARANTINED).order_by(  # type: ignore[call-overload]
            b.c.quarantined_at)
        return await self.db.read(lambda c: [IntegrityRow(*row) for row in c.execute(q)])

    async def verified_after(self, cutoff: float) -> set[str]:
        """Blobs verified since `cutoff` and not marked stale since."""
        b = t.blob_integrity
        q = select(b.c.digest).where(b.c.state == OK, b.c.verified_at >= cutoff,
                                     (b.c.stale_at.is_(None)) | (b.c.stale_at <= b.c.verified_at))
        return await self.db.read(lambda c: set(c.execute(q).scalars()))

    async def record_verified(self, digest: str, size: int, at: float | None = None) -> None:
        now = at or time.time()
        values = {"state": OK, "size": size, "verified_at": now, "quarantined_at": None,
                  "quarantine_path": None, "detail": None}
        await self.db.write(lambda c: c.execute(
            self.db.insert(t.blob_integrity).values(digest=digest, **values)
            .on_conflict_do_update(index_elements=["digest"], set_=values)))

    async def record_quarantine(self, digest: str, path: str | None, detail: str) -> None:
        now = time.time()
        values = {"state": QUARANTINED, "quarantined_at": now, "quarantine_path": path,
                  "detail": detail}
        await self.db.write(lambda c: c.execute(
            self.db.insert(t.blob_integrity).values(digest=digest, **values)
            .on_conflict_do_update(index_elements=["digest"], set_=values)))

    async def mark_stale(self, at: float | None = None) -> int:
        """Make every earlier verification stale (verify_on_read=first re-hashes them)."""
        now = at or time.time()
        return await self.db.write(lambda c: c.execute(
            update(t.blob_integrity).where(t.blob_integrity.c.state == OK)
            .values(stale_at=now)).rowcount)

    async def repositories_with_blob(self, digest: str) -> list[str]:
        r, rb = s.repositories, s.repo_blobs
        q = (select(r.c.name).join(rb, rb.c.repo_id == r.c.id).where(rb.c.digest == digest)
             .order_by(r.c.name))
        return await self.db.read(lambda c: list(c.execute(q).scalars()))

    async def indexed_blobs(self) -> dict[str, int]:
        q = select(s.blobs.c.digest, s.blobs.c.size)
        return await self.db.read(lambda c: {row[0]: row[1] for row in c.execute(q)})

    # -- leases ------------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Hold `name` for `ttl` seconds if it is free, expired or already ours."""
        now = time.time()
        lease = t.worker_leases

        def run(c: Connection) -> bool:
            c.execute(self.db.insert(lease)
                      .values(name=name, holder=holder, expires_at=now + ttl)
                      .on_conflict_do_nothing(index_elements=["name"]))
            r = c.execute(update(lease)
                          .where(lease.c.name == name,
                                 (lease.c.holder == holder) | (lease.c.expires_at < now))
                          .values(holder=holder, expires_at=now + ttl))
            return r.rowcount > 0

        return await self.db.write(run)

    async def release_lease(self, name: str, holder: str) -> None:
        lease = t.worker_leases
        await self.db.write(lambda c: c.execute(
            delete(lease).where(lease.c.name == name, lease.c.holder == holder)))
