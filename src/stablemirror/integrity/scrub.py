"""Scrub: re-hash stored blobs at a bounded I/O rate; quarantine what fails; self-heal.

A blob whose bytes no longer hash to its digest is moved out of `blobs/` at once (the store's
`quarantine`), marked in `blob_integrity`, logged, counted and audited; from then on a pull
gets BLOB_UNKNOWN (or, in a mirrored namespace, a fresh verified copy from upstream). When a
`BlobHealer` is configured the blob is fetched again right away. Finding corruption also
marks every earlier verification stale: `verify_on_read: first` re-hashes those blobs on
their next read, since a disk that rotted one blob is suspect for all.

The background worker (`ScrubWorker`) re-verifies blobs not verified for
`reverify_after_seconds`, as the periodic `scrub` job (one run at a time across replicas).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from stablemirror.index.audit_events import FAILED, OK, AuditEvent, AuditSink
from stablemirror.index.trust_rows import TrustIndex
from stablemirror.metrics import FoundBy, Metrics
from stablemirror.oci.digest import Digest, Hasher
from stablemirror.oci.errors import OCIError
from stablemirror.registry.protocol import RegistryService, RequestContext
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.integrity")

CHUNK = 1 << 20
SYSTEM = RequestContext(actor="system:scrub", client="", user_agent="stablemirror-scrub",
                        request_id="")


class BlobHealer(Protocol):
    """Gets a blob again from somewhere trustworthy (an upstream, a peer), verifies it
    against its digest and publishes it into the store. The mirror implements it."""

    async def heal(self, repository: str, digest: Digest) -> bool:
        """True once verified bytes of `digest` are back in the store."""
        ...


class ServiceHealer:
    """Heals through a registry service that can fetch what is missing locally (the mirror:
    opening a blob whose file is gone fetches it from upstream, verified, into the store)."""

    def __init__(self, service: RegistryService, store: BlobStore,
                 publish_wait_seconds: float = 120.0) -> None:
        self.service = service
        self.store = store
        self.publish_wait_seconds = publish_wait_seconds

    async def heal(self, repository: str, digest: Digest) -> bool:
        if await self.store.stat(digest) is not None:
            return True
        try:
            source = await self.service.open_blob(SYSTEM, repository, str(digest))
            if source.path is None:
                async for _chunk in source.open_stream(0, source.size):
                    pass
        except (OCIError, OSError) as e:
            log.info("healing %s via %s failed: %s", digest, repository, e)
            return False
        # The stream ends once the digest matched; fsync and publish follow it.
        deadline = time.monotonic() + self.publish_wait_seconds
        while await self.store.stat(digest) is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


class RateLimiter:
    """A token bucket over bytes; 0 means unlimited."""

    def __init__(self, bytes_per_second: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rate = bytes_per_second
        self.clock = clock
        self._allowance = 0.0
        self._last = clock()

    async def consume(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = self.clock()
        # At most one second of burst.
        self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
        self._last = now
        self._allowance -= n
        if self._allowance < 0:
            await asyncio.sleep(-self._allowance / self.rate)


def read_and_hash(f: BinaryIO, hasher: Hasher, n: int) -> bytes:
    """One read plus its hash update, in one trip to a worker thread."""
    data = f.read(n)
    if data:
        hasher.update(data)
    return data


async def hash_blob(store: BlobStore, digest: Digest, limiter: RateLimiter) -> tuple[str, int]:
    """(hex digest of the stored bytes, their size); FileNotFoundError if the blob is gone."""
    hasher = digest.hasher()
    size = 0
    path = store.local_path(digest)
    if path is not None:
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while data := await asyncio.to_thread(read_and_hash, f, hasher, CHUNK):
                size += len(data)
                await limiter.consume(len(data))
        finally:
            f.close()
        return hasher.hexdigest(), size
    if await store.stat(digest) is None:
        raise FileNotFoundError(str(digest))
    async for data in store.read(digest):
        hasher.update(data)
        size += len(data)
        await limiter.consume(len(data))
    return hasher.hexdigest(), size


class Quarantine:
    """What happens to bytes that failed verification, wherever that was found."""

    def __init__(self, store: BlobStore, index: TrustIndex, metrics: Metrics | None = None,
                 audit: AuditSink | None = None, healer: BlobHealer | None = None) -> None:
        self.store = store
        self.index = index
        self.metrics = metrics
        self.audit = audit
        self.healer = healer

    async def corrupt(self, digest: Digest, actual: str, found_by: FoundBy,
                      ctx: RequestContext | None = None, repository: str = "") -> str | None:
        """Quarantine `digest` now; returns where its bytes went (None if already gone)."""
        moved = await self.store.quarantine(digest, f"{int(time.time())}-{uuid.uuid4().hex[:8]}")
        detail = f"content hashes to {digest.algorithm}:{actual}"
        await self.index.record_quarantine(str(digest), str(moved) if moved else None, detail)
        await self.index.mark_stale()
        log.error("blob %s is corrupt (%s), found by %s: quarantined to %s", digest, detail,
                  found_by, moved)
        if self.metrics is not None:
            self.metrics.blob_quarantined(found_by)
        await self._audit(AuditEvent(
            action="blob.quarantine", repository=repository, digest=str(digest), result=FAILED,
            detail={"found_by": found_by, "actual": f"{digest.algorithm}:{actual}",
                    "quarantine_path": str(moved) if moved else None},
            **_who(ctx)))
        return moved

    async def heal(self, digest: Digest, repositories: list[str]) -> bool:
        """Ask the healer for `digest` via each repository that holds it, until one works."""
        if self.healer is None:
            return False
        for repository in repositories or await self.index.repositories_with_blob(str(digest)):
            if await self.healer.heal(repository, digest):
                size = await self.store.stat(digest)
                await self.index.record_verified(str(digest), size or 0)
                log.warning("blob %s healed via %s", digest, repository)
                if self.metrics is not None:
                    self.metrics.blob_healed()
                await self._audit(AuditEvent(action="blob.heal", repository=repository,
                                             digest=str(digest), result=OK,
                                             actor="system:scrub"))
                return True
        return False

    async def _audit(self, event: AuditEvent) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(event)
        except Exception:
            log.exception("could not audit %s of %s", event.action, event.digest)


def _who(ctx: RequestContext | None) -> dict[str, Any]:
    if ctx is None:
        return {"actor": "system:scrub"}
    return {"actor": ctx.actor or "", "client": ctx.client, "user_agent": ctx.user_agent,
            "request_id": ctx.request_id}


@dataclass
class ScrubReport:
    checked: int = 0
    ok: int = 0
    skipped: int = 0  # verified recently enough
    bytes_hashed: int = 0
    corrupt: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # indexed, but no bytes in the store
    seconds: float = 0.0


class Scrubber:
    def __init__(self, store: BlobStore, index: TrustIndex, quarantine: Quarantine,
                 rate_bytes_per_second: float = 0, metrics: Metrics | None = None) -> None:
        self.store = store
        self.index = index
        self.quarantine = quarantine
        self.limiter = RateLimiter(rate_bytes_per_second)
        self.metrics = metrics

    async def run(self, *, older_than: float | None = None,
                  keep_going: Callable[[], Awaitable[bool]] | None = None) -> ScrubReport:
        """Re-hash every stored blob (or those not verified for `older_than` seconds)."""
        started = time.monotonic()
        report = ScrubReport()
        recent = (await self.index.verified_after(time.time() - older_than)
                  if older_than else set())
        seen: set[str] = set()
        async for digest, _mtime in _blobs(self.store):
            if keep_going is not None and not await keep_going():
                break
            seen.add(str(digest))
            if str(digest) in recent:
                report.skipped += 1
                continue
            await self._check(digest, report)
        else:
            await self._missing(seen, report)
        report.seconds = time.monotonic() - started
        return report

    async def _check(self, digest: Digest, report: ScrubReport) -> None:
        try:
            actual, size = await hash_blob(self.store, digest, self.limiter)
        except FileNotFoundError:
            return  # collected or quarantined meanwhile
        report.checked += 1
        report.bytes_hashed += size
        if actual == digest.hex:
            report.ok += 1
            await self.index.record_verified(str(digest), size)
            if self.metrics is not None:
                self.metrics.scrub_blob("ok")
            return
        report.corrupt.append(str(digest))
        if self.metrics is not None:
            self.metrics.scrub_blob("corrupt")
        await self.quarantine.corrupt(digest, actual, "scrub")
        if await self.quarantine.heal(digest, []):
            report.healed.append(str(digest))

    async def _missing(self, seen: set[str], report: ScrubReport) -> None:
        """Indexed blobs with no bytes: quarantined earlier, lost, or mid-upload."""
        for digest, _size in sorted((await self.index.indexed_blobs()).items()):
            if digest in seen or await self.store.stat(Digest.parse(digest)) is not None:
                continue
            row = await self.index.integrity(digest)
            if row is None or row.state != "quarantined":
                report.missing.append(digest)
                continue
            if await self.quarantine.heal(Digest.parse(digest), []):
                report.healed.append(digest)


async def _blobs(store: BlobStore) -> AsyncIterator[tuple[Digest, float]]:
    async for item in store.list_blobs():
        yield item


class ScrubWorker:
    """Background scrub in the server: one pass per run of the periodic `scrub` job (one at
    a time across workers and replicas: the job queue's lease, docs/jobs.md)."""

    def __init__(self, scrubber: Scrubber, interval: float, reverify_after: float) -> None:
        self.scrubber = scrubber
        self.interval = interval
        self.reverify_after = reverify_after

    async def run_pass(self, keep_going: Callable[[], bool]) -> ScrubReport:
        """One pass; stops early once `keep_going` is False (the job's lease was lost)."""
        async def still_holding() -> bool:
            return keep_going()

        report = await self.scrubber.run(older_than=self.reverify_after,
                                         keep_going=still_holding)
        if report.checked or report.corrupt:
            log.info("scrub: %d checked, %d corrupt, %d healed, %d skipped",
                     report.checked, len(report.corrupt), len(report.healed), report.skipped)
        return report
