"""The integrity and trust tables on sqlite3 (index/sql_trust.py's SqlTrustIndex, same rows)
for the stdlib-sqlite3 backend (index/lite_db.py)."""

from __future__ import annotations

import sqlite3
import time

from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.trust_rows import OK, QUARANTINED, IntegrityRow, PolicyKeyRow, PolicyRow

INTEGRITY_COLUMNS = ("digest, state, size, verified_at, stale_at, quarantined_at, "
                     "quarantine_path, detail")


def _integrity(row: tuple[object, ...]) -> IntegrityRow:
    return IntegrityRow(*row)  # type: ignore[arg-type]


class LiteTrustIndex:
    def __init__(self, db: LiteDatabase) -> None:
        self.db = db

    # -- policies -------------------------------------------------------------------------
    async def list_policies(self) -> list[PolicyRow]:
        def run(c: sqlite3.Connection) -> list[PolicyRow]:
            keys: dict[str, list[PolicyKeyRow]] = {}
            for row in c.execute("SELECT pattern, role, key_id, public_key, label "
                                 "FROM trust_policy_keys ORDER BY role, key_id"):
                keys.setdefault(row[0], []).append(PolicyKeyRow(row[1], row[2], row[3], row[4]))
            rows = c.execute("SELECT pattern, mode, updated_at FROM trust_policies "
                             "ORDER BY pattern")
            return [PolicyRow(r[0], r[1], r[2], tuple(keys.get(r[0], ()))) for r in rows]

        return await self.db.read(run)

    async def set_policy(self, pattern: str, mode: str, keys: list[PolicyKeyRow]) -> None:
        """Create or replace the policy for `pattern` (its keys are replaced too)."""
        now = time.time()

        def run(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO trust_policies (pattern, mode, updated_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (pattern) DO UPDATE SET mode = ?, updated_at = ?",
                      (pattern, mode, now, mode, now))
            c.execute("DELETE FROM trust_policy_keys WHERE pattern = ?", (pattern,))
            c.executemany("INSERT INTO trust_policy_keys (pattern, role, key_id, public_key, "
                          "label) VALUES (?, ?, ?, ?, ?)",
                          [(pattern, k.role, k.key_id, k.public_key, k.label) for k in keys])

        await self.db.write(run)

    async def delete_policy(self, pattern: str) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            c.execute("DELETE FROM trust_policy_keys WHERE pattern = ?", (pattern,))
            return c.execute("DELETE FROM trust_policies WHERE pattern = ?",
                             (pattern,)).rowcount > 0

        return await self.db.write(run)

    async def parent_indexes(self, repository: str, digest: str) -> list[str]:
        """Digests of the image indexes in `repository` that list manifest `digest`."""
        return await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT m.manifest_digest FROM manifest_refs m JOIN repositories r "
            "ON r.id = m.repo_id WHERE r.name = ? AND m.ref_digest = ? AND m.kind = 'manifest' "
            "LIMIT 16", (repository, digest))])

    # -- blob integrity -------------------------------------------------------------------
    async def integrity(self, digest: str) -> IntegrityRow | None:
        row = await self.db.read(lambda c: c.execute(
            f"SELECT {INTEGRITY_COLUMNS} FROM blob_integrity WHERE digest = ?",
            (digest,)).fetchone())
        return None if row is None else _integrity(row)

    async def quarantined(self) -> list[IntegrityRow]:
        return await self.db.read(lambda c: [_integrity(r) for r in c.execute(
            f"SELECT {INTEGRITY_COLUMNS} FROM blob_integrity WHERE state = ? "
            "ORDER BY quarantined_at", (QUARANTINED,))])

    async def verified_after(self, cutoff: float) -> set[str]:
        """Blobs verified since `cutoff` and not marked stale since."""
        return await self.db.read(lambda c: {r[0] for r in c.execute(
            "SELECT digest FROM blob_integrity WHERE state = ? AND verified_at >= ? "
            "AND (stale_at IS NULL OR stale_at <= verified_at)", (OK, cutoff))})

    async def record_verified(self, digest: str, size: int, at: float | None = None) -> None:
        now = at or time.time()
        await self.db.write(lambda c: c.execute(
            "INSERT INTO blob_integrity (digest, state, size, verified_at, quarantined_at, "
            "quarantine_path, detail) VALUES (?, ?, ?, ?, NULL, NULL, NULL) "
            "ON CONFLICT (digest) DO UPDATE SET state = excluded.state, size = excluded.size, "
            "verified_at = excluded.verified_at, quarantined_at = NULL, "
            "quarantine_path = NULL, detail = NULL", (digest, OK, size, now)))

    async def record_quarantine(self, digest: str, path: str | None, detail: str) -> None:
        now = time.time()
        await self.db.write(lambda c: c.execute(
            "INSERT INTO blob_integrity (digest, state, quarantined_at, quarantine_path, "
            "detail) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
            "state = excluded.state, quarantined_at = excluded.quarantined_at, "
            "quarantine_path = excluded.quarantine_path, detail = excluded.detail",
            (digest, QUARANTINED, now, path, detail)))

    async def mark_stale(self, at: float | None = None) -> int:
        """Make every earlier verification stale (verify_on_read=first re-hashes them)."""
        now = at or time.time()
        return await self.db.write(lambda c: c.execute(
            "UPDATE blob_integrity SET stale_at = ? WHERE state = ?", (now, OK)).rowcount)

    async def repositories_with_blob(self, digest: str) -> list[str]:
        return await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT r.name FROM repositories r JOIN repo_blobs rb ON rb.repo_id = r.id "
            "WHERE rb.digest = ? ORDER BY r.name", (digest,))])

    async def indexed_blobs(self) -> dict[str, int]:
        return await self.db.read(lambda c: {r[0]: r[1] for r in c.execute(
            "SELECT digest, size FROM blobs")})

    # -- leases ---------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Hold `name` for `ttl` seconds if it is free, expired or already ours."""
        now = time.time()

        def run(c: sqlite3.Connection) -> bool:
            c.execute("INSERT INTO worker_leases (name, holder, expires_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (name) DO NOTHING", (name, holder, now + ttl))
            return c.execute("UPDATE worker_leases SET holder = ?, expires_at = ? "
                             "WHERE name = ? AND (holder = ? OR expires_at < ?)",
                             (holder, now + ttl, name, holder, now)).rowcount > 0

        return await self.db.write(run)

    async def release_lease(self, name: str, holder: str) -> None:
        await self.db.write(lambda c: c.execute(
            "DELETE FROM worker_leases WHERE name = ? AND holder = ?", (name, holder)))
