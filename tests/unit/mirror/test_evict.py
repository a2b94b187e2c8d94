"""Cache bounds (mirror/evict.py): LRU above max_bytes, inactivity, pinned and hosted content
kept, blobs in use never evicted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from stablemirror.index.mirror_sql import MirrorIndex
from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.access import AccessRecorder
from stablemirror.mirror.config import CacheSettings
from stablemirror.mirror.evict import CacheEvictor
from stablemirror.store.protocol import BlobStore

HOUR = 3600.0


def ago(seconds: float) -> float:
    """A pull time `seconds` before now, taken when the test builds its blobs (a module-level
    NOW would age by however long the suite ran before this test)."""
    return time.time() - seconds


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


class Cached:
    """The mirror index's view of cached blobs: (digest, size, last pulled, repositories)."""

    def __init__(self, *blobs: tuple[int, int, float, list[str]]) -> None:
        self.blobs = {digest(n): (size, last, repos) for n, size, last, repos in blobs}
        self.forgotten: list[str] = []

    async def eviction_candidates(self, _limit: int) -> list[tuple[str, int, float]]:
        rows = [(d, size, last) for d, (size, last, _r) in self.blobs.items()]
        return sorted(rows, key=lambda r: r[2])  # least recently used first

    async def blob_repositories(self, d: str) -> list[str]:
        return self.blobs[d][2]

    async def forget_blob(self, d: str, _idle_since: float) -> bool:
        self.forgotten.append(d)
        return True


class NoFiles:
    async def trash(self, _digest: Any, _name: str) -> None:
        return None  # nothing on disk: removal is done


class NoPending:
    async def flush(self) -> None:
        pass


def evictor(cached: Cached, **settings: Any) -> CacheEvictor:
    return CacheEvictor(CacheSettings(**settings), cast(BlobStore, NoFiles()),
                        cast(RegistryIndex, None), cast(MirrorIndex, cached),
                        cast(AccessRecorder, NoPending()),
                        lambda r: r.startswith("mirror/"), Path("/nonexistent/evict.lock"))


async def test_above_max_bytes_the_least_recently_used_go_first() -> None:
    cached = Cached((1, 100, ago(3 * HOUR), ["mirror/a"]), (2, 100, ago(2 * HOUR), ["mirror/a"]),
                    (3, 100, ago(1 * HOUR), ["mirror/a"]))
    report = await evictor(cached, max_bytes=150, in_use_seconds=60).run_once()
    assert cached.forgotten == [digest(1), digest(2)]
    assert (report.evicted, report.bytes_freed, report.cached_bytes) == (2, 200, 300)


async def test_pinned_hosted_and_in_use_blobs_stay() -> None:
    cached = Cached((1, 100, ago(3 * HOUR), ["mirror/pinned/x"]),
                    (2, 100, ago(3 * HOUR), ["mirror/a", "team/pushed"]),  # also hosted
                    (3, 100, ago(10), ["mirror/a"]),  # pulled seconds ago
                    (4, 100, ago(3 * HOUR), []))  # linked nowhere any more
    report = await evictor(cached, max_bytes=0, in_use_seconds=60,
                           pinned=["mirror/pinned/*"]).run_once()
    assert cached.forgotten == [digest(4)]
    assert report.cached_bytes == 200  # 3 and 4: what eviction may ever remove


async def test_inactivity_evicts_below_max_bytes_too() -> None:
    cached = Cached((1, 100, ago(3 * HOUR), ["mirror/a"]), (2, 100, ago(10) * 60, ["mirror/a"]))
    await evictor(cached, inactive_seconds=HOUR, in_use_seconds=60).run_once()
    assert cached.forgotten == [digest(1)]
