"""Cache bounds for mirrored content: size limit (LRU), inactivity limit, pinned repositories.

Only blobs that live solely in proxied namespaces are ever evicted; hosted content is
never touched. A blob is in use, and kept, when it was served or when a manifest that
needs it was served within `in_use_seconds`. A client already reading an evicted blob
keeps its open file (the inode lives until it closes). Eviction runs as the per-replica
`mirror.evict` job (docs/jobs.md), under an flock on `<data>/evict.lock` as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stablemirror.index.mirror_rows import MirrorState
from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.access import AccessRecorder
from stablemirror.mirror.config import CacheSettings
from stablemirror.oci.digest import Digest
from stablemirror.oci.patterns import fnmatch_match
from stablemirror.registry.gc import ChunkRows, remove_blob_file
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.evict")

MAX_CANDIDATES = 100_000


@dataclass
class EvictionReport:
    cached_bytes: int = 0
    evicted: int = 0
    bytes_freed: int = 0


class CacheEvictor:
    def __init__(self, settings: CacheSettings, store: BlobStore, index: RegistryIndex,
                 mirror_index: MirrorState, access: AccessRecorder,
                 is_proxied: Callable[[str], bool], lock_path: Path,
                 chunks: ChunkRows | None = None) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        self.mirror_index = mirror_index
        self.access = access
        self.is_proxied = is_proxied
        self.lock_path = lock_path
        self.chunks = chunks  # an evicted blob's delta chunk rows go with it

    @property
    def enabled(self) -> bool:
        return self.settings.max_bytes is not None or self.settings.inactive_seconds is not None

    def _evictable(self, repositories: list[str]) -> bool:
        if not repositories:
            return True  # cached, linked nowhere any more
        return all(self.is_proxied(r) and not any(fnmatch_match(p, r)
                                                  for p in self.settings.pinned)
                   for r in repositories)

    async def run_once(self) -> EvictionReport:
        report = EvictionReport()
        await self.access.flush()
        now = time.time()
        idle_since = now - self.settings.in_use_seconds
        inactive_before = (now - self.settings.inactive_seconds
                           if self.settings.inactive_seconds is not None else None)
        evictable: list[tuple[str, int, float]] = []
        for digest, size, last in await self.mirror_index.eviction_candidates(MAX_CANDIDATES):
            if self._evictable(await self.mirror_index.blob_repositories(digest)):
                evictable.append((digest, size, last))
                report.cached_bytes += size
        over = (report.cached_bytes - self.settings.max_bytes
                if self.settings.max_bytes is not None else 0)
        for digest, size, last in evictable:  # least recently used first
            too_old = inactive_before is not None and last < inactive_before
            if over <= 0 and not too_old:
                if inactive_before is None:
                    break
                continue
            if last >= idle_since:
                continue  # in use: never evicted, whatever the pressure
            if await self.mirror_index.forget_blob(digest, idle_since) and \
                    await remove_blob_file(self.store, self.index, Digest.parse(digest),
                                           self.chunks):
                report.evicted += 1
                report.bytes_freed += size
                over -= size
        if report.evicted:
            log.info("evicted %d blobs, %d bytes (cache was %d bytes)", report.evicted,
                     report.bytes_freed, report.cached_bytes)
        return report

    async def run_exclusive(self) -> EvictionReport | None:
        """One round, unless another process on this data dir is evicting (None): the
        `mirror.evict` job is per replica already, the lock also covers two replicas
        configured with different ids on one data dir."""
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return await self.run_once()
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
