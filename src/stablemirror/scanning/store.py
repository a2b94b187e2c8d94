"""SQL of the scan tables (scanning/schema.py): cached blob results, manifest scans and
their claims (one process runs a pending scan; a claim older than the lease is taken over,
so a scan interrupted by a restart runs again), exemptions."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, or_, select, update

from stablemirror.index.db import Database
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.schema import scan_blobs, scan_exemptions, scan_manifests

PENDING, DONE, FAILED = "pending", "done", "failed"
RETRY_FAILED_SECONDS = 30.0


def dump_findings(findings: Sequence[Finding]) -> str:
    return json.dumps([f.to_json() for f in findings], separators=(",", ":"))


def load_findings(text: str) -> list[Finding]:
    return [Finding.from_json(d) for d in json.loads(text) if isinstance(d, dict)]


@dataclass(frozen=True, slots=True)
class ManifestScan:
    repository: str
    digest: str
    status: str
    analyzer: str
    findings: list[Finding]
    queued_at: float
    finished_at: float | None
    referrer: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class BlobResult:
    name: str
    findings: list[Finding]


@dataclass(frozen=True, slots=True)
class Exemption:
    repository: str
    digest: str
    document: str
    signature: str
    key_id: str


class ScanStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def blob(self, digest: str, analyzer: str) -> BlobResult | None:
        def q(c: Connection) -> BlobResult | None:
            row = c.execute(select(scan_blobs.c.name, scan_blobs.c.findings).where(
                scan_blobs.c.digest == digest, scan_blobs.c.analyzer == analyzer)).first()
            return None if row is None else BlobResult(row.name, load_findings(row.findings))
        return await self.db.read(q)

    async def put_blob(self, digest: str, analyzer: str, name: str, size: int,
                       findings: Sequence[Finding]) -> None:
        def w(c: Connection) -> None:
            c.execute(delete(scan_blobs).where(scan_blobs.c.digest == digest,
                                               scan_blobs.c.analyzer == analyzer))
            c.execute(scan_blobs.insert().values(
                digest=digest, analyzer=analyzer, name=name, size=size,
                findings=dump_findings(findings), scanned_at=time.time()))
        await self.db.write(w)

    async def manifest(self, repository: str, digest: str) -> ManifestScan | None:
        def q(c: Connection) -> ManifestScan | None:
            row = c.execute(select(scan_manifests).where(
                scan_manifests.c.repository == repository,
                scan_manifests.c.digest == digest)).first()
            if row is None:
                return None
            return ManifestScan(row.repository, row.digest, row.status, row.analyzer,
                                load_findings(row.findings), row.queued_at, row.finished_at,
                                row.referrer, row.error)
        return await self.db.read(q)

    def stale(self, scan: ManifestScan, analyzer: str) -> bool:
        """A result to redo: of an older analyzer, or a failure old enough to retry."""
        return scan.analyzer != analyzer or (
            scan.status == FAILED
            and (scan.finished_at or 0) < time.time() - RETRY_FAILED_SECONDS)

    async def queue(self, repository: str, digest: str, analyzer: str) -> None:
        """Record a pending scan unless one of this analyzer version exists already (a
        failed one is retried after RETRY_FAILED_SECONDS: an upstream may have been down)."""
        retry_before = time.time() - RETRY_FAILED_SECONDS

        def w(c: Connection) -> None:
            row = c.execute(select(scan_manifests.c.analyzer, scan_manifests.c.status,
                                   scan_manifests.c.finished_at).where(
                scan_manifests.c.repository == repository,
                scan_manifests.c.digest == digest)).first()
            if row is not None and row.analyzer == analyzer and not (
                    row.status == FAILED and (row.finished_at or 0) < retry_before):
                return
            c.execute(delete(scan_manifests).where(
                scan_manifests.c.repository == repository, scan_manifests.c.digest == digest))
            c.execute(scan_manifests.insert().values(
                repository=repository, digest=digest, status=PENDING, analyzer=analyzer,
                findings="[]", queued_at=time.time()))
        await self.db.write(w)

    async def claim(self, repository: str, digest: str, lease_seconds: float) -> bool:
        """Take a pending scan for this process; False if another holds a fresh claim."""
        now = time.time()

        def w(c: Connection) -> bool:
            result = c.execute(update(scan_manifests).where(
                scan_manifests.c.repository == repository, scan_manifests.c.digest == digest,
                scan_manifests.c.status == PENDING,
                or_(scan_manifests.c.claimed_at.is_(None),
                    scan_manifests.c.claimed_at < now - lease_seconds),
            ).values(claimed_at=now))
            return bool(result.rowcount)
        return await self.db.write(w)

    async def finish(self, repository: str, digest: str, status: str,
                     findings: Sequence[Finding], error: str | None = None) -> None:
        def w(c: Connection) -> None:
            c.execute(update(scan_manifests).where(
                scan_manifests.c.repository == repository, scan_manifests.c.digest == digest,
            ).values(status=status, findings=dump_findings(findings), error=error,
                     finished_at=time.time()))
        await self.db.write(w)

    async def set_referrer(self, repository: str, digest: str, referrer: str) -> None:
        def w(c: Connection) -> None:
            c.execute(update(scan_manifests).where(
                scan_manifests.c.repository == repository, scan_manifests.c.digest == digest,
            ).values(referrer=referrer))
        await self.db.write(w)

    async def pending(self, limit: int = 10_000) -> list[tuple[str, str]]:
        def q(c: Connection) -> list[tuple[str, str]]:
            rows = c.execute(select(scan_manifests.c.repository, scan_manifests.c.digest)
                             .where(scan_manifests.c.status == PENDING)
                             .order_by(scan_manifests.c.queued_at).limit(limit))
            return [(r.repository, r.digest) for r in rows]
        return await self.db.read(q)

    async def blocked_blob(self, digest: str, analyzer: str) -> list[Finding]:
        found = await self.blob(digest, analyzer)
        return [] if found is None else found.findings

    # -- exemptions -----------------------------------------------------------------------
    async def exemption(self, repository: str, digest: str) -> Exemption | None:
        def q(c: Connection) -> Exemption | None:
            row = c.execute(select(scan_exemptions).where(and_(
                scan_exemptions.c.repository == repository,
                scan_exemptions.c.digest == digest))).first()
            return None if row is None else Exemption(row.repository, row.digest,
                                                      row.document, row.signature, row.key_id)
        return await self.db.read(q)

    async def put_exemption(self, e: Exemption) -> None:
        def w(c: Connection) -> None:
            c.execute(delete(scan_exemptions).where(
                scan_exemptions.c.repository == e.repository,
                scan_exemptions.c.digest == e.digest))
            c.execute(scan_exemptions.insert().values(
                repository=e.repository, digest=e.digest, document=e.document,
                signature=e.signature, key_id=e.key_id, created_at=time.time()))
        await self.db.write(w)

    async def remove_exemption(self, repository: str, digest: str) -> bool:
        def w(c: Connection) -> bool:
            return bool(c.execute(delete(scan_exemptions).where(
                scan_exemptions.c.repository == repository,
                scan_exemptions.c.digest == digest)).rowcount)
        return await self.db.write(w)
