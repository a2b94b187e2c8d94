"""A local hot tier in front of any blob store: promotion by access frequency.

The cold tier (S3, or a filesystem on slow disks) is the source of truth: every write goes
there, and a hot copy is only ever a verified cache of it. A blob read `promote_after`
times within `window` seconds is promoted: one cold read streams it into the hot dir while
every reader of it, on any worker, follows the growing file (store/hot_promote.py); once
its digest checks out it is fsynced and renamed into place. From then on `local_path`
hands out the hot copy (sendfile, no cold request) and `stat` answers from it.

Hits: a cold read is one small SQLite transaction (the sliding window, store/hot_index.py);
a hot hit is a dict update in memory, flushed to the scores once a second. Eviction runs
after a promotion (and while still above the mark): above the high watermark, hot copies go
lowest score first until the low watermark, skipping every copy someone holds
(store/hot_files.py). Deletes, trash and quarantine go through the tier: the hot copy goes
with the cold one. Design and measurements: docs/storage.md, "Hot tier".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from stablemirror.metrics import Metrics, TierName
from stablemirror.oci.digest import Digest
from stablemirror.store.filesystem import read_range
from stablemirror.store.hot_config import HotTierSettings
from stablemirror.store.hot_files import HotFiles, HotHolds
from stablemirror.store.hot_index import HotIndex
from stablemirror.store.hot_promote import NotPromoted, Promotions
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.hot")

FLUSH_SECONDS = 1.0


class TieredBlobStore:
    def __init__(self, cold: BlobStore, hot_dir: Path, settings: HotTierSettings,
                 metrics: Metrics | None = None) -> None:
        self.cold = cold
        self.settings = settings
        self.metrics = metrics
        self.files = HotFiles(hot_dir)
        self.index = HotIndex(self.files.db, settings.window, settings.promote_after)
        self.holds = HotHolds(self.files)
        self.promotions = Promotions(cold, self.files.promoting, self.files.path, self.index,
                                     settings.low_bytes, self._promoted,
                                     lambda hits, n: self._count("cold", n, hits))
        self._pending: dict[str, tuple[int, float]] = {}  # hot hits not yet in the index
        self._flushed_at = time.monotonic()
        self._over = False  # the last eviction could not get below the high watermark
        self._evicting: asyncio.Task[int] | None = None
        self.promotions.sweep_leftovers()
        self.index.reconcile(self.files.on_disk(), time.time())
        self._report_bytes()

    # -- reads ---------------------------------------------------------------------------
    async def stat(self, digest: Digest) -> int | None:
        held = self.holds.hold(digest)
        return held[0] if held is not None else await self.cold.stat(digest)

    def local_path(self, digest: Digest) -> Path | None:
        """The hot copy (held, so it stays until the sendfile opens it), else None: a cold
        blob is read through `read`, where it is counted and maybe promoted."""
        held = self.holds.hold(digest)
        if held is None:
            return None
        self._hot_hit(digest, held[0])
        return held[1]

    async def redirect_url(self, digest: Digest) -> str | None:
        """None for a hot copy (sent from here). A cold blob the cold tier would redirect
        to (S3 `redirect: true`) is counted here, since its bytes never pass through us;
        on its promoting hit it is served (and promoted) instead of redirected."""
        if self.holds.hold(digest) is not None:
            return None
        url = await self.cold.redirect_url(digest)
        if url is None:
            return None
        try:
            hits, too_big = self.index.cold_hit(str(digest), time.time())
        except Exception:
            return url
        return None if hits >= self.settings.promote_after and not too_big else url

    async def read(self, digest: Digest, offset: int = 0, length: int | None = None
                   ) -> AsyncIterator[bytes]:
        if self.holds.hold(digest) is not None:
            self._hot_hit(digest, 0)
            stream = self._read_hot(digest, offset, length)
        else:
            stream = self._read_cold(digest, offset, length)
        async for chunk in stream:
            yield chunk

    async def _read_hot(self, digest: Digest, offset: int, length: int | None
                        ) -> AsyncIterator[bytes]:
        try:
            f = open(self.files.path(digest), "rb")  # noqa: ASYNC230, SIM115 - closed below
        except FileNotFoundError:  # deleted meanwhile: the cold tier decides
            async for chunk in self._read_cold(digest, offset, length):
                yield chunk
            return
        try:
            with contextlib.suppress(OSError):  # in use while we send (see hot_files.py)
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            async for data in read_range(f, offset, length):
                self._count("hot", len(data), hits=0)
                yield data
        finally:
            f.close()

    async def _read_cold(self, digest: Digest, offset: int, length: int | None
                         ) -> AsyncIterator[bytes]:
        try:
            hits, too_big = self.index.cold_hit(str(digest), time.time())
        except Exception as e:  # a busy counter file must not fail a read
            log.warning("hot tier: hit of %s not counted: %r", digest, e)
            hits, too_big = 0, True
        if hits >= self.settings.promote_after and not too_big:
            sent = 0
            try:
                async for chunk in self.promotions.follow(digest, offset, length):
                    sent += len(chunk)
                    yield chunk
                self._count("hot", sent)
                return
            except NotPromoted as e:
                if sent:
                    raise
                log.info("hot tier: %s not promoted (%s); reading the cold tier", digest, e)
        self._count("cold", 0)
        async for chunk in self.cold.read(digest, offset, length):
            self._count("cold", len(chunk), hits=0)
            yield chunk

    # -- hits, scores, eviction -------------------------------------------------------------
    def _count(self, tier: TierName, n: int, hits: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.tier_read(tier, n, hits)

    def _hot_hit(self, digest: Digest, size: int) -> None:
        self._count("hot", size)
        count, _latest = self._pending.get(str(digest), (0, 0.0))
        self._pending[str(digest)] = (count + 1, time.time())
        if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Hot hits of this process into the shared scores (one transaction)."""
        pending, self._pending = self._pending, {}
        self._flushed_at = time.monotonic()
        try:
            if pending:
                self.index.hot_hits(pending)
        except Exception as e:
            log.warning("hot tier: %d hot hits not recorded: %r", len(pending), e)
        if self._over:
            self._schedule_eviction()

    def _promoted(self, digest: Digest, size: int) -> None:
        log.info("hot tier: promoted %s (%d bytes)", digest, size)
        if self.metrics is not None:
            self.metrics.tier_promoted()
        self._schedule_eviction()

    def _schedule_eviction(self) -> None:
        if self._evicting is None or self._evicting.done():
            # no loop (a command's last flush): the next promotion evicts
            with contextlib.suppress(RuntimeError):
                self._evicting = asyncio.get_running_loop().create_task(self.evict())

    async def evict(self) -> int:
        """Above the high watermark, demote lowest scores first down to the low one; one
        evictor at a time across processes. Returns how many copies went."""
        try:
            return await asyncio.to_thread(self._evict_locked)
        finally:
            self._report_bytes()

    def _evict_locked(self) -> int:
        fd = os.open(self.files.evict_lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker evicts right now
            return self._evict_rows()
        finally:
            os.close(fd)

    def _evict_rows(self) -> int:
        rows = self.index.hot_rows(time.time())
        total = sum(size for _d, size, _s in rows)
        if total <= self.settings.high_bytes:
            self._over = False
            return 0
        demoted = 0
        for digest, size, _score in rows:
            if total <= self.settings.low_bytes:
                break
            removed = self.files.evict(Digest.parse(digest))
            if removed is False:
                continue  # in use: never evicted
            self.index.drop(digest)
            total -= size
            if removed:
                demoted += 1
        if demoted and self.metrics is not None:
            self.metrics.tier_demoted(demoted)
        if demoted:
            log.info("hot tier: demoted %d copies; %d bytes hot", demoted, total)
        self._over = total > self.settings.high_bytes
        return demoted

    def _report_bytes(self) -> None:
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.set_storage("hot", self.index.hot_bytes(), self.settings.max_bytes)

    # -- deletes: the hot copy goes with the cold one --------------------------------------
    def _drop_hot(self, digest: Digest) -> None:
        self.holds.release(digest)
        self.index.forget(str(digest), time.time())
        self.files.path(digest).unlink(missing_ok=True)

    async def delete(self, digest: Digest) -> bool:
        self._drop_hot(digest)
        return await self.cold.delete(digest)

    async def trash(self, digest: Digest, token: str) -> str | None:
        self._drop_hot(digest)
        return await self.cold.trash(digest, token)

    async def restore(self, digest: Digest, trashed: str) -> None:
        await self.cold.restore(digest, trashed)  # promoted again when it is read again

    async def drop_trashed(self, trashed: str) -> None:
        await self.cold.drop_trashed(trashed)

    async def quarantine(self, digest: Digest, token: str) -> str | None:
        self._drop_hot(digest)
        return await self.cold.quarantine(digest, token)

    # -- everything else is the cold tier's -----------------------------------------------------
    def list_blobs(self) -> AsyncIterator[tuple[Digest, float]]:
        return self.cold.list_blobs()

    async def upload_create(self, upload_id: str) -> None:
        await self.cold.upload_create(upload_id)

    async def upload_size(self, upload_id: str) -> int:
        return await self.cold.upload_size(upload_id)

    async def upload_append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]
                            ) -> int:
        return await self.cold.upload_append(upload_id, offset, chunks)

    async def upload_verify(self, upload_id: str, digest: Digest) -> int:
        return await self.cold.upload_verify(upload_id, digest)

    async def upload_publish(self, upload_id: str, digest: Digest) -> None:
        await self.cold.upload_publish(upload_id, digest)

    async def publish_verified(self, path: Path, digest: Digest) -> None:
        await self.cold.publish_verified(path, digest)

    async def upload_abort(self, upload_id: str) -> None:
        await self.cold.upload_abort(upload_id)

    def list_uploads(self) -> AsyncIterator[tuple[str, float]]:
        return self.cold.list_uploads()

    async def aclose(self) -> None:
        """Stop promotions (a later read starts them again) and record pending hits."""
        self.flush()
        await self.promotions.aclose()
        if self._evicting is not None:
            with contextlib.suppress(Exception):
                await self._evicting
        self.holds.close()
        self.index.close()
        await self.cold.aclose()
