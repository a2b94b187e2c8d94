"""The registry index (index/protocol.py RegistryIndex) on sqlite3, without SQLAlchemy: the
same rows and statements as index/sql.py's SqlIndex on SQLite, over index/lite_db.py.
It passes the same contract suite (tests/contract/test_index.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.lite_audit import append as append_audit
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.protocol import IndexUsage, Referrer, StoredManifest, Upload
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestBlobUnknown
from stablemirror.oci.manifest import Manifest

MANIFEST_BY_DIGEST = (
    "SELECT m.digest, m.media_type, m.content FROM manifests m "
    "JOIN repositories r ON r.id = m.repo_id WHERE r.name = ? AND m.digest = ?")
MANIFEST_BY_TAG = (
    "SELECT m.digest, m.media_type, m.content FROM tags t "
    "JOIN repositories r ON r.id = t.repo_id "
    "JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.manifest_digest "
    "WHERE r.name = ? AND t.name = ?")
BLOB_SIZE = (
    "SELECT b.size FROM blobs b JOIN repo_blobs rb ON rb.digest = b.digest "
    "JOIN repositories r ON r.id = rb.repo_id WHERE r.name = ? AND b.digest = ?")
# Not referenced by any manifest, and not pushed or linked since the cutoff.
UNREFERENCED = ("b.pushed_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM manifest_refs mr WHERE mr.ref_digest = b.digest)")


def _before_nul(last: str | None) -> str | None:
    """A client's `last`, cut at its first NUL (index/sql.py says why)."""
    return last.partition("\x00")[0] if last else last


def repo_id(c: sqlite3.Connection, name: str) -> int | None:
    row = c.execute("SELECT id FROM repositories WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def ensure_repo(c: sqlite3.Connection, name: str) -> int:
    c.execute("INSERT INTO repositories (name, created_at) VALUES (?, ?) "
              "ON CONFLICT (name) DO NOTHING", (name, time.time()))
    found = repo_id(c, name)
    assert found is not None
    return found


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


class LiteIndex:
    def __init__(self, db: LiteDatabase) -> None:
        self.db = db

    async def ping(self) -> None:
        path = self.db.path

        def fresh() -> None:
            # A new connection, not the kept ones: they keep a deleted or replaced database
            # file open and go on answering from it.
            uri = Path(path).resolve().as_uri() + "?mode=rw"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                conn.execute("SELECT id FROM repositories LIMIT 1").fetchall()

        await asyncio.to_thread(fresh)

    async def usage(self) -> IndexUsage:
        def run(c: sqlite3.Connection) -> IndexUsage:
            n, size = c.execute("SELECT count(*), coalesce(sum(size), 0) FROM blobs").fetchone()
            uploads = c.execute("SELECT count(*) FROM uploads").fetchone()[0]
            return IndexUsage(int(n), int(size), int(uploads or 0))

        return await self.db.read(run)

    async def close(self) -> None:
        await self.db.close()

    # -- repositories ---------------------------------------------------------------------
    async def repository_exists(self, name: str) -> bool:
        return await self.db.read(lambda c: repo_id(c, name) is not None)

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        # Only repositories with content: a failed or open upload creates the row, not a repo.
        sql = ("SELECT name FROM repositories r WHERE (EXISTS (SELECT 1 FROM repo_blobs rb "
               "WHERE rb.repo_id = r.id) OR EXISTS (SELECT 1 FROM manifests m "
               "WHERE m.repo_id = r.id))")
        params: list[object] = []
        if after := _before_nul(last):
            sql += " AND r.name > ?"
            params.append(after)
        sql += " ORDER BY r.name"
        if n is not None:
            sql += " LIMIT ?"
            params.append(n)
        return await self.db.read(lambda c: [r[0] for r in c.execute(sql, params)])

    # -- blobs ----------------------------------------------------------------------------
    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        row = await self.db.read(
            lambda c: c.execute(BLOB_SIZE, (repository, str(digest))).fetchone())
        return None if row is None else int(row[0])

    async def blob_size_anywhere(self, digest: Digest) -> int | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT size FROM blobs WHERE digest = ?", (str(digest),)).fetchone())
        return None if row is None else int(row[0])

    async def link_blob(
        self, repository: str, digest: Digest, size: int, audit: AuditEvent | None = None
    ) -> None:
        now = time.time()

        def run(c: sqlite3.Connection) -> None:
            rid = ensure_repo(c, repository)
            c.execute("INSERT INTO blobs (digest, size, pushed_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (digest) DO UPDATE SET pushed_at = ?",
                      (str(digest), size, now, now))
            c.execute("INSERT INTO repo_blobs (repo_id, digest, linked_at) VALUES (?, ?, ?) "
                      "ON CONFLICT (repo_id, digest) DO UPDATE SET linked_at = ?",
                      (rid, str(digest), now, now))
            if audit is not None:  # same transaction: the record commits with the link
                append_audit(c, audit)

        await self.db.write(run)

    async def unlink_blob(self, repository: str, digest: Digest) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            rid = repo_id(c, repository)
            if rid is None:
                return False
            return c.execute("DELETE FROM repo_blobs WHERE repo_id = ? AND digest = ?",
                             (rid, str(digest))).rowcount > 0

        return await self.db.write(run)

    # -- manifests and tags ---------------------------------------------------------------
    async def get_manifest(self, repository: str, reference: Digest | str
                           ) -> StoredManifest | None:
        sql = MANIFEST_BY_DIGEST if isinstance(reference, Digest) else MANIFEST_BY_TAG
        row = await self.db.read(
            lambda c: c.execute(sql, (repository, str(reference))).fetchone())
        return None if row is None else StoredManifest(row[0], row[1], bytes(row[2]))

    @staticmethod
    def _check_references(c: sqlite3.Connection, rid: int, manifest: Manifest) -> None:
        # No row locks to take: the write transaction holds SQLite's one writer lock.
        wanted = sorted({str(d.digest) for d in manifest.blobs})
        if wanted:
            have = {r[0] for r in c.execute(
                "SELECT b.digest FROM blobs b JOIN repo_blobs rb ON rb.digest = b.digest "
                f"WHERE rb.repo_id = ? AND b.digest IN ({_placeholders(len(wanted))})",
                (rid, *wanted))}
            for missing in sorted(set(wanted) - have):
                raise ManifestBlobUnknown(digest=missing)
        children = sorted({str(d.digest) for d in manifest.children})
        if children:
            have = {r[0] for r in c.execute(
                "SELECT digest FROM manifests WHERE repo_id = ? "
                f"AND digest IN ({_placeholders(len(children))})", (rid, *children))}
            for missing in sorted(set(children) - have):
                raise ManifestBlobUnknown(digest=missing, kind="manifest")

    async def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        tags: list[str],
        check_references: bool = True,
        audit: AuditEvent | None = None,
    ) -> None:
        now = time.time()
        digest = str(manifest.digest)

        def run(c: sqlite3.Connection) -> None:
            rid = ensure_repo(c, repository)
            if check_references:  # a mirror caches manifests before their blobs
                self._check_references(c, rid, manifest)
            c.execute(
                "INSERT INTO manifests (repo_id, digest, media_type, artifact_type, subject, "
                "annotations, size, content, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (repo_id, digest) DO NOTHING",
                (rid, digest, manifest.media_type, manifest.effective_artifact_type,
                 str(manifest.subject.digest) if manifest.subject else None,
                 json.dumps(manifest.annotations) if manifest.annotations else None,
                 len(manifest.raw), manifest.raw, now))
            refs = [(rid, digest, str(d.digest), "blob") for d in manifest.blobs]
            refs += [(rid, digest, str(d.digest), "manifest") for d in manifest.children]
            if refs:
                c.executemany("INSERT INTO manifest_refs (repo_id, manifest_digest, ref_digest, "
                              "kind) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", refs)
            if audit is not None:  # before the tag upsert, which hides where tags pointed
                self._audit_put(c, rid, tags, digest, audit)
            for tag in tags:
                c.execute("INSERT INTO tags (repo_id, name, manifest_digest, updated_at) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (repo_id, name) DO UPDATE SET "
                          "manifest_digest = ?, updated_at = ?",
                          (rid, tag, digest, now, digest, now))

        await self.db.write(run)

    @staticmethod
    def _audit_put(c: sqlite3.Connection, rid: int, tags: list[str], digest: str,
                   event: AuditEvent) -> None:
        """The push, plus a `tag.move` record for each tag that pointed elsewhere."""
        moved = c.execute(
            "SELECT name, manifest_digest FROM tags WHERE repo_id = ? AND manifest_digest != ? "
            f"AND name IN ({_placeholders(len(tags))})", (rid, digest, *tags)
        ).fetchall() if tags else []
        append_audit(c, event)
        for tag, old in moved:
            append_audit(c, event.but(action="tag.move", reference=tag,
                                      detail={"from": old, "to": digest}))

    async def delete_manifest(
        self, repository: str, digest: Digest, audit: AuditEvent | None = None
    ) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            rid = repo_id(c, repository)
            if rid is None:
                return False
            d = str(digest)
            deleted = c.execute("DELETE FROM manifests WHERE repo_id = ? AND digest = ?",
                                (rid, d)).rowcount > 0
            c.execute("DELETE FROM manifest_refs WHERE repo_id = ? AND manifest_digest = ?",
                      (rid, d))
            c.execute("DELETE FROM tags WHERE repo_id = ? AND manifest_digest = ?", (rid, d))
            if audit is not None and deleted:
                append_audit(c, audit)
            return deleted

        return await self.db.write(run)

    async def delete_tag(
        self, repository: str, tag: str, audit: AuditEvent | None = None
    ) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            rid = repo_id(c, repository)
            if rid is None:
                return False
            old = c.execute("SELECT manifest_digest FROM tags WHERE repo_id = ? AND name = ?",
                            (rid, tag)).fetchone()
            deleted = c.execute("DELETE FROM tags WHERE repo_id = ? AND name = ?",
                                (rid, tag)).rowcount > 0
            if audit is not None and deleted:
                append_audit(c, audit.but(digest=audit.digest or str(old[0] if old else "")))
            return deleted

        return await self.db.write(run)

    async def list_tags(self, repository: str, n: int | None, last: str | None
                        ) -> list[str] | None:
        def run(c: sqlite3.Connection) -> list[str] | None:
            rid = repo_id(c, repository)
            if rid is None:
                return None
            sql = "SELECT name FROM tags WHERE repo_id = ?"
            params: list[object] = [rid]
            if after := _before_nul(last):
                sql += " AND name > ?"
                params.append(after)
            sql += " ORDER BY name"
            if n is not None:
                sql += " LIMIT ?"
                params.append(n)
            return [r[0] for r in c.execute(sql, params)]

        return await self.db.read(run)

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None
    ) -> list[Referrer]:
        if artifact_type is not None and "\x00" in artifact_type:
            return []  # no stored type holds a NUL (oci/manifest.py)
        sql = ("SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations "
               "FROM manifests m JOIN repositories r ON r.id = m.repo_id "
               "WHERE r.name = ? AND m.subject = ?")
        params: list[object] = [repository, str(subject)]
        if artifact_type is not None:
            sql += " AND m.artifact_type = ?"
            params.append(artifact_type)
        sql += " ORDER BY m.created_at, m.digest"
        rows = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        return [Referrer(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None)
                for r in rows]

    # -- uploads --------------------------------------------------------------------------
    async def create_upload(self, repository: str, upload_id: str) -> None:
        def run(c: sqlite3.Connection) -> None:
            rid = ensure_repo(c, repository)
            c.execute("INSERT INTO uploads (id, repo_id, created_at) VALUES (?, ?, ?)",
                      (upload_id, rid, time.time()))

        await self.db.write(run)

    async def get_upload(self, upload_id: str) -> Upload | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT u.id, r.name, u.created_at FROM uploads u "
            "JOIN repositories r ON r.id = u.repo_id WHERE u.id = ?", (upload_id,)).fetchone())
        return None if row is None else Upload(row[0], row[1], row[2])

    async def delete_upload(self, upload_id: str) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM uploads WHERE id = ?",
                                                (upload_id,)))

    async def uploads_older_than(self, cutoff: float) -> list[str]:
        return await self.db.read(lambda c: [r[0] for r in c.execute(
            "SELECT id FROM uploads WHERE created_at < ?", (cutoff,))])

    # -- garbage collection ---------------------------------------------------------------
    async def unreferenced_blobs(self, cutoff: float) -> list[tuple[str, int]]:
        return await self.db.read(lambda c: [(r[0], r[1]) for r in c.execute(
            f"SELECT b.digest, b.size FROM blobs b WHERE {UNREFERENCED}", (cutoff,))])

    async def forget_blob_if_unreferenced(self, digest: str, cutoff: float) -> bool:
        def run(c: sqlite3.Connection) -> bool:
            # The write transaction holds the writer lock: no manifest PUT or re-push can
            # commit between this check and the deletes.
            idle = c.execute(f"SELECT b.digest FROM blobs b WHERE b.digest = ? AND "
                             f"{UNREFERENCED}", (digest, cutoff)).fetchone()
            if idle is None:
                return False
            c.execute("DELETE FROM repo_blobs WHERE digest = ?", (digest,))
            c.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
            return True

        return await self.db.write(run)

    async def blob_known(self, digest: str) -> bool:
        row = await self.db.read(lambda c: c.execute(
            "SELECT count(*) FROM blobs WHERE digest = ?", (digest,)).fetchone())
        return bool(row[0])
