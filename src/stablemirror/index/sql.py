"""SQL index over SQLAlchemy Core: SQLite (embedded default) or PostgreSQL (index/db.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, delete, func, or_, select

from stablemirror.index import schema as s
from stablemirror.index.audit_chain import append as append_audit
from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.db import Database
from stablemirror.index.protocol import IndexUsage, Referrer, StoredManifest, Upload
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestBlobUnknown
from stablemirror.oci.manifest import Manifest


def _hot_statements() -> dict[str, Select[Any]]:
    m, r, t, b, rb = s.manifests, s.repositories, s.tags, s.blobs, s.repo_blobs
    cols = (m.c.digest, m.c.media_type, m.c.content)
    return {
        "manifest_by_digest": select(*cols).join(r, r.c.id == m.c.repo_id)
        .where(r.c.name == bindparam("repo"), m.c.digest == bindparam("ref")),
        "manifest_by_tag": select(*cols).select_from(t).join(r, r.c.id == t.c.repo_id)
        .join(m, and_(m.c.repo_id == t.c.repo_id, m.c.digest == t.c.manifest_digest))
        .where(r.c.name == bindparam("repo"), t.c.name == bindparam("ref")),
        "blob_size": select(b.c.size).join(rb, rb.c.digest == b.c.digest)
        .join(r, r.c.id == rb.c.repo_id)
        .where(r.c.name == bindparam("repo"), b.c.digest == bindparam("ref")),
    }


def _before_nul(last: str | None) -> str | None:
    """A client's `last`, cut at its first NUL. The same rows follow it: names and tags hold
    no NUL and every character they do hold sorts above it, so nothing stored falls between
    the prefix and the whole. And PostgreSQL text cannot carry a NUL at all."""
    return last.partition("\x00")[0] if last else last


class SqlIndex:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._read = db.read
        self._write = db.write
        self._insert = db.insert
        # The pull path's lookups, built once; Database.read_row runs them off the engine
        # (a plain sqlite3 connection, or asyncpg from the event loop on PostgreSQL).
        self._reads = _hot_statements()

    @staticmethod
    def _repo_id(conn: Connection, name: str) -> int | None:
        return conn.execute(
            select(s.repositories.c.id).where(s.repositories.c.name == name)
        ).scalar()

    def _ensure_repo(self, conn: Connection, name: str) -> int:
        conn.execute(
            self._insert(s.repositories)
            .values(name=name, created_at=time.time())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        repo_id = self._repo_id(conn, name)
        assert repo_id is not None
        return repo_id

    async def ping(self) -> None:
        q = select(s.repositories.c.id).limit(1)
        database = self.db.reader.url.database
        if not self.db.is_sqlite or not database or database == ":memory:":
            await self._read(lambda c: c.execute(q).first())
            return

        def fresh() -> None:
            # A new connection, not a pooled one: pooled connections keep a deleted or
            # replaced database file open and go on answering from it.
            uri = Path(database).resolve().as_uri() + "?mode=rw"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
                conn.execute("SELECT id FROM repositories LIMIT 1").fetchall()

        await asyncio.to_thread(fresh)

    async def usage(self) -> IndexUsage:
        blobs = select(func.count(), func.coalesce(func.sum(s.blobs.c.size), 0))
        uploads = select(func.count()).select_from(s.uploads)

        def run() -> IndexUsage:
            with self.db.reader.connect() as c:
                n, size = c.execute(blobs).one()
                return IndexUsage(int(n), int(size), int(c.execute(uploads).scalar() or 0))

        # A scan, not a point read: off the event loop even for SQLite.
        return await asyncio.to_thread(run)

    async def close(self) -> None:
        await self.db.close()

    # -- repositories ---------------------------------------------------------------------
    async def repository_exists(self, name: str) -> bool:
        return await self._read(lambda c: self._repo_id(c, name) is not None)

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        # Only repositories with content: a failed or open upload creates the row, not a repo.
        repo_id = s.repositories.c.id
        has_content = or_(
            select(s.repo_blobs.c.repo_id).where(s.repo_blobs.c.repo_id == repo_id).exists(),
            select(s.manifests.c.repo_id).where(s.manifests.c.repo_id == repo_id).exists(),
        )
        q = select(s.repositories.c.name).where(has_content).order_by(s.repositories.c.name)
        if last := _before_nul(last):
            q = q.where(s.repositories.c.name > last)
        if n is not None:
            q = q.limit(n)
        return await self._read(lambda c: list(c.execute(q).scalars()))

    # -- blobs --------------------------------------------------------------------------------
    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        row = await self.db.read_row(self._reads["blob_size"], repo=repository,
                                     ref=str(digest))
        return None if row is None else int(row[0])

    async def blob_size_anywhere(self, digest: Digest) -> int | None:
        q = select(s.blobs.c.size).where(s.blobs.c.digest == str(digest))
        return await self._read(lambda c: c.execute(q).scalar())

    async def link_blob(
        self, repository: str, digest: Digest, size: int, audit: AuditEvent | None = None
    ) -> None:
        now = time.time()

        def run(c: Connection) -> None:
            repo_id = self._ensure_repo(c, repository)
            c.execute(
                self._insert(s.blobs)
                .values(digest=str(digest), size=size, pushed_at=now)
                .on_conflict_do_update(index_elements=["digest"], set_={"pushed_at": now})
            )
            c.execute(
                self._insert(s.repo_blobs)
                .values(repo_id=repo_id, digest=str(digest), linked_at=now)
                .on_conflict_do_update(
                    index_elements=["repo_id", "digest"], set_={"linked_at": now}
                )
            )
            if audit is not None:  # same transaction: the record commits with the link
                append_audit(c, audit)

        await self._write(run)

    async def unlink_blob(self, repository: str, digest: Digest) -> bool:
        def run(c: Connection) -> bool:
            repo_id = self._repo_id(c, repository)
            if repo_id is None:
                return False
            r = c.execute(
                delete(s.repo_blobs).where(
                    s.repo_blobs.c.repo_id == repo_id, s.repo_blobs.c.digest == str(digest)
                )
            )
            return r.rowcount > 0

        return await self._write(run)

    # -- manifests and tags ----------------------------------------------------------------------
    async def get_manifest(self, repository: str, reference: Digest | str) -> StoredManifest | None:
        name = "manifest_by_digest" if isinstance(reference, Digest) else "manifest_by_tag"
        row = await self.db.read_row(self._reads[name], repo=repository, ref=str(reference))
        return None if row is None else StoredManifest(row[0], row[1], bytes(row[2]))

    def _check_references(self, c: Connection, repo_id: int, manifest: Manifest) -> None:
        wanted = {str(d.digest) for d in manifest.blobs}
        if wanted:
            # FOR SHARE on the blob rows (PostgreSQL) orders us against GC's FOR UPDATE.
            have = set(
                c.execute(
                    select(s.blobs.c.digest)
                    .join(s.repo_blobs, s.repo_blobs.c.digest == s.blobs.c.digest)
                    .where(s.repo_blobs.c.repo_id == repo_id, s.blobs.c.digest.in_(wanted))
                    .with_for_update(read=True, of=s.blobs)
                ).scalars()
            )
            for missing in sorted(wanted - have):
                raise ManifestBlobUnknown(digest=missing)
        children = {str(d.digest) for d in manifest.children}
        if children:
            have = set(
                c.execute(
                    select(s.manifests.c.digest).where(
                        s.manifests.c.repo_id == repo_id, s.manifests.c.digest.in_(children)
                    )
                ).scalars()
            )
            for missing in sorted(children - have):
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

        def run(c: Connection) -> None:
            repo_id = self._ensure_repo(c, repository)
            if check_references:  # a mirror caches manifests before their blobs
                self._check_references(c, repo_id, manifest)
            c.execute(
                self._insert(s.manifests)
                .values(
                    repo_id=repo_id,
                    digest=digest,
                    media_type=manifest.media_type,
                    artifact_type=manifest.effective_artifact_type,
                    subject=str(manifest.subject.digest) if manifest.subject else None,
                    annotations=json.dumps(manifest.annotations) if manifest.annotations else None,
                    size=len(manifest.raw),
                    content=manifest.raw,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["repo_id", "digest"])
            )
            refs = [
                {
                    "repo_id": repo_id,
                    "manifest_digest": digest,
                    "ref_digest": str(d.digest),
                    "kind": "blob",
                }
                for d in manifest.blobs
            ]
            refs += [
                {
                    "repo_id": repo_id,
                    "manifest_digest": digest,
                    "ref_digest": str(d.digest),
                    "kind": "manifest",
                }
                for d in manifest.children
            ]
            if refs:
                c.execute(self._insert(s.manifest_refs).on_conflict_do_nothing(), refs)
            if audit is not None:  # before the tag upsert, which hides where tags pointed
                self._audit_put(c, repo_id, tags, digest, audit)
            for tag in tags:
                c.execute(
                    self._insert(s.tags)
                    .values(
                        repo_id=repo_id,
                        name=tag,
                        manifest_digest=digest,
                        updated_at=now,
                    )
                    .on_conflict_do_update(
                        index_elements=["repo_id", "name"],
                        set_={"manifest_digest": digest, "updated_at": now},
                    )
                )

        await self._write(run)

    @staticmethod
    def _audit_put(
        c: Connection, repo_id: int, tags: list[str], digest: str, event: AuditEvent
    ) -> None:
        """The push, plus a `tag.move` record for each tag that pointed elsewhere."""
        moved = c.execute(
            select(s.tags.c.name, s.tags.c.manifest_digest).where(
                s.tags.c.repo_id == repo_id,
                s.tags.c.name.in_(tags),
                s.tags.c.manifest_digest != digest,
            )
        ).all()
        append_audit(c, event)
        for tag, old in moved:
            append_audit(
                c, event.but(action="tag.move", reference=tag, detail={"from": old, "to": digest})
            )

    async def delete_manifest(
        self, repository: str, digest: Digest, audit: AuditEvent | None = None
    ) -> bool:
        def run(c: Connection) -> bool:
            repo_id = self._repo_id(c, repository)
            if repo_id is None:
                return False
            d = str(digest)
            r = c.execute(
                delete(s.manifests).where(
                    s.manifests.c.repo_id == repo_id, s.manifests.c.digest == d
                )
            )
            c.execute(
                delete(s.manifest_refs).where(
                    s.manifest_refs.c.repo_id == repo_id, s.manifest_refs.c.manifest_digest == d
                )
            )
            c.execute(
                delete(s.tags).where(s.tags.c.repo_id == repo_id, s.tags.c.manifest_digest == d)
            )
            if audit is not None and r.rowcount > 0:
                append_audit(c, audit)
            return r.rowcount > 0

        return await self._write(run)

    async def delete_tag(
        self, repository: str, tag: str, audit: AuditEvent | None = None
    ) -> bool:
        def run(c: Connection) -> bool:
            repo_id = self._repo_id(c, repository)
            if repo_id is None:
                return False
            where = (s.tags.c.repo_id == repo_id, s.tags.c.name == tag)
            old = c.execute(select(s.tags.c.manifest_digest).where(*where)).scalar()
            r = c.execute(delete(s.tags).where(*where))
            if audit is not None and r.rowcount > 0:
                append_audit(c, audit.but(digest=audit.digest or str(old or "")))
            return r.rowcount > 0

        return await self._write(run)

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str] | None:
        def run(c: Connection) -> list[str] | None:
            repo_id = self._repo_id(c, repository)
            if repo_id is None:
                return None
            q = select(s.tags.c.name).where(s.tags.c.repo_id == repo_id).order_by(s.tags.c.name)
            if after := _before_nul(last):
                q = q.where(s.tags.c.name > after)
            if n is not None:
                q = q.limit(n)
            return list(c.execute(q).scalars())

        return await self._read(run)

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None
    ) -> list[Referrer]:
        if artifact_type is not None and "\x00" in artifact_type:
            return []  # no stored type holds a NUL (oci/manifest.py); PostgreSQL can't bind one
        m, r = s.manifests, s.repositories
        q = (
            select(m.c.digest, m.c.media_type, m.c.size, m.c.artifact_type, m.c.annotations)
            .join(r, r.c.id == m.c.repo_id)
            .where(r.c.name == repository, m.c.subject == str(subject))
            .order_by(m.c.created_at, m.c.digest)
        )
        if artifact_type is not None:
            q = q.where(m.c.artifact_type == artifact_type)
        rows = await self._read(lambda c: c.execute(q).all())
        return [
            Referrer(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None)
            for row in rows
        ]

    # -- uploads ---------------------------------------------------------------------------------
    async def create_upload(self, repository: str, upload_id: str) -> None:
        def run(c: Connection) -> None:
            repo_id = self._ensure_repo(c, repository)
            c.execute(
                s.uploads.insert().values(id=upload_id, repo_id=repo_id, created_at=time.time())
            )

        await self._write(run)

    async def get_upload(self, upload_id: str) -> Upload | None:
        q = (
            select(s.uploads.c.id, s.repositories.c.name, s.uploads.c.created_at)
            .join(s.repositories, s.repositories.c.id == s.uploads.c.repo_id)
            .where(s.uploads.c.id == upload_id)
        )
        row = await self._read(lambda c: c.execute(q).first())
        return None if row is None else Upload(row[0], row[1], row[2])

    async def delete_upload(self, upload_id: str) -> None:
        await self._write(lambda c: c.execute(delete(s.uploads).where(s.uploads.c.id == upload_id)))

    async def uploads_older_than(self, cutoff: float) -> list[str]:
        q = select(s.uploads.c.id).where(s.uploads.c.created_at < cutoff)
        return await self._read(lambda c: list(c.execute(q).scalars()))

    # -- garbage collection --------------------------------------------------------------------
    @staticmethod
    def _unreferenced(cutoff: float) -> Any:
        referenced = select(s.manifest_refs.c.ref_digest).where(
            s.manifest_refs.c.ref_digest == s.blobs.c.digest
        )
        return and_(s.blobs.c.pushed_at < cutoff, ~referenced.exists())

    async def unreferenced_blobs(self, cutoff: float) -> list[tuple[str, int]]:
        q = select(s.blobs.c.digest, s.blobs.c.size).where(self._unreferenced(cutoff))
        rows = await self._read(lambda c: c.execute(q).all())
        return [(row[0], row[1]) for row in rows]

    async def forget_blob_if_unreferenced(self, digest: str, cutoff: float) -> bool:
        def run(c: Connection) -> bool:
            # Lock the row first (PostgreSQL), then re-check in a fresh statement, which sees
            # whatever a concurrent manifest PUT or re-push committed while we waited.
            locked = c.execute(
                select(s.blobs.c.digest).where(s.blobs.c.digest == digest).with_for_update()
            ).first()
            if locked is None:
                return False
            idle = c.execute(
                select(s.blobs.c.digest).where(
                    s.blobs.c.digest == digest, self._unreferenced(cutoff)
                )
            ).first()
            if idle is None:
                return False
            c.execute(delete(s.repo_blobs).where(s.repo_blobs.c.digest == digest))
            c.execute(delete(s.blobs).where(s.blobs.c.digest == digest))
            return True

        return await self._write(run)

    async def blob_known(self, digest: str) -> bool:
        q = select(func.count()).select_from(s.blobs).where(s.blobs.c.digest == digest)
        return bool(await self._read(lambda c: c.execute(q).scalar()))
