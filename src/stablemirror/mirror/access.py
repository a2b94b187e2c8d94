"""Blob access times, batched: one index write every few seconds instead of one per pull."""

from __future__ import annotations

import asyncio
import logging
import time

from stablemirror.index.mirror_rows import MirrorState

log = logging.getLogger("stablemirror.access")


class AccessRecorder:
    def __init__(self, index: MirrorState, flush_seconds: float = 5.0,
                 immediate_for_manifests: bool = False) -> None:
        self.index = index
        self.flush_seconds = flush_seconds
        # With eviction on, a pulled manifest's blobs are marked at once, so an evictor in
        # another worker cannot miss a pull that is only starting.
        self.immediate = immediate_for_manifests
        self._pending: dict[str, float] = {}

    def touch(self, digest: str) -> None:
        self._pending[digest] = time.time()

    async def manifest_pulled(self, blob_digests: list[str]) -> None:
        if not self.immediate:
            for d in blob_digests:
                self.touch(d)
            return
        now = time.time()
        try:
            await self.index.touch_blobs(dict.fromkeys(blob_digests, now))
        except Exception:
            log.exception("could not record blob access times")

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        try:
            await self.index.touch_blobs(pending)
        except Exception:
            log.exception("could not record blob access times")

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                await self.flush()
        finally:
            await self.flush()
