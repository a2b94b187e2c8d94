"""The hot tier (store/tiered.py) over a counting filesystem store as its cold tier:
promotion by hits within a window, one cold read per promotion however many readers (two
tier instances over one hot dir stand for two workers), eviction by score between the
watermarks and never of a held copy, verified promotions only, crash leftovers cleaned."""

from __future__ import annotations

import asyncio
import fcntl
import os
import uuid
from pathlib import Path

import pytest

from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown
from stablemirror.store.hot_promote import PromotionAborted
from stablemirror.store.tiered import TieredBlobStore
from tests.support.hot_support import CountingStore, put, read_all, tiered

MiB = 1 << 20


@pytest.fixture
def cold(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "cold")


async def blob(cold: CountingStore, data: bytes) -> Digest:
    return await put(cold, data, uuid.uuid4().hex)


def hot_file(tier: TieredBlobStore, d: Digest) -> Path:
    return tier.files.path(d)


async def settle(tier: TieredBlobStore) -> None:
    """Wait for the promotions and the eviction this tier started (bounded)."""
    tasks = [*tier.promotions._leading.values(),
             *([tier._evicting] if tier._evicting is not None else [])]
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    if tier._evicting is not None:
        await asyncio.wait_for(asyncio.gather(tier._evicting, return_exceptions=True), 10)


async def test_promoted_on_the_nth_hit_then_served_without_the_cold_tier(
        cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=3, window=60)
    data = os.urandom(3 * MiB + 17)
    d = await blob(cold, data)
    for hit in (1, 2):
        assert tier.local_path(d) is None
        assert await read_all(tier, d) == data
        assert cold.reads == hit and not hot_file(tier, d).exists()
    assert await read_all(tier, d) == data  # the third hit promotes, while it is read
    await settle(tier)
    assert cold.reads == 3
    path = tier.local_path(d)
    assert path == hot_file(tier, d) and path.read_bytes() == data
    reads, stats = cold.reads, cold.stats
    assert await tier.stat(d) == len(data)
    assert await read_all(tier, d, 5, 100) == data[5:105]
    assert tier.local_path(d) is not None
    assert (cold.reads, cold.stats) == (reads, stats)  # not one request to the cold tier
    await tier.aclose()


async def test_hits_older_than_the_window_do_not_count(cold: CountingStore,
                                                       tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=2, window=0.3)
    d = await blob(cold, b"x" * 1000)
    await read_all(tier, d)
    await asyncio.sleep(0.4)
    await read_all(tier, d)  # the first hit left the window: 1 of 2
    await settle(tier)
    assert tier.local_path(d) is None
    await read_all(tier, d)  # 2 within 0.3 s
    await settle(tier)
    assert tier.local_path(d) is not None
    await tier.aclose()


async def test_twenty_concurrent_readers_on_two_workers_cause_one_cold_read(
        cold: CountingStore, tmp_path: Path) -> None:
    workers = [tiered(cold, tmp_path / "hot", promote_after=1) for _ in range(2)]
    data = os.urandom(4 * MiB + 3)
    d = await blob(cold, data)
    cold.chunk_delay = 0.05  # the promotion takes a while: everyone piles up on it
    got = await asyncio.wait_for(asyncio.gather(
        *(read_all(workers[i % 2], d) for i in range(20))), 30)
    assert all(g == data for g in got)
    assert cold.reads == 1
    ranged = await asyncio.wait_for(read_all(workers[1], d, MiB, 10), 5)
    assert ranged == data[MiB:MiB + 10]
    for w in workers:
        await settle(w)
        await w.aclose()
    assert cold.reads == 1


async def test_a_range_read_follows_the_promotion(cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    data = os.urandom(2 * MiB)
    d = await blob(cold, data)
    cold.chunk_delay = 0.02
    parts = await asyncio.wait_for(asyncio.gather(
        read_all(tier, d, MiB - 5, 10), read_all(tier, d, 0, 1), read_all(tier, d)), 10)
    assert list(parts) == [data[MiB - 5:MiB + 5], data[:1], data]
    assert cold.reads == 1
    await tier.aclose()


async def fill(tier: TieredBlobStore, cold: CountingStore, n: int, size: int) -> list[Digest]:
    digests = []
    for _ in range(n):
        d = await blob(cold, os.urandom(size))
        await read_all(tier, d)
        await settle(tier)
        digests.append(d)
    return digests


async def test_eviction_by_frequency_and_recency_between_the_watermarks(
        cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1, max_bytes=1000,
                  high_watermark=0.9, low_watermark=0.5)
    (a,) = await fill(tier, cold, 1, 200)
    for _ in range(4):  # used most, but longest ago: LRU would drop it first
        assert tier.local_path(a) is not None
    tier.flush()
    b, c, d = await fill(tier, cold, 3, 200)  # 800 bytes: below the high mark
    tier.holds.close()  # every hold expired
    assert tier.index.hot_bytes() == 800 and all(
        hot_file(tier, x).exists() for x in (a, b, c, d))
    (e,) = await fill(tier, cold, 1, 200)  # 1000 > 900: down to 500 or less
    present = {x for x in (a, b, c, d, e) if hot_file(tier, x).exists()}
    assert present == {a, e}  # frequent a, recent e; b, c, d (one hit each) went
    assert tier.index.hot_bytes() == 400
    await tier.aclose()


async def test_a_copy_being_served_is_never_evicted(cold: CountingStore,
                                                    tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1, max_bytes=1000,
                  high_watermark=0.9, low_watermark=0.5)
    a, b, c, d = await fill(tier, cold, 4, 200)
    tier.holds.close()
    serving = os.open(hot_file(tier, a), os.O_RDONLY)  # as api/sendfile.py holds it
    fcntl.flock(serving, fcntl.LOCK_SH | fcntl.LOCK_NB)
    held = tier.local_path(b)  # handed out (to a sendfile not yet started): held too
    assert held is not None
    await fill(tier, cold, 1, 200)
    assert hot_file(tier, a).exists() and hot_file(tier, b).exists()
    assert not hot_file(tier, c).exists() and not hot_file(tier, d).exists()
    os.close(serving)
    await tier.aclose()


async def test_a_digest_mismatch_leaves_no_hot_copy_and_followers_abort(
        cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    data = os.urandom(2 * MiB)
    d = await blob(cold, data)
    cold.corrupt, cold.chunk_delay = True, 0.02
    received: list[int] = []

    async def reader() -> None:
        n = 0
        try:
            async for chunk in tier.read(d):
                n += len(chunk)
        finally:
            received.append(n)

    results = await asyncio.wait_for(asyncio.gather(
        *(reader() for _ in range(5)), return_exceptions=True), 10)
    assert all(isinstance(r, PromotionAborted) for r in results), results
    assert all(n < len(data) for n in received)  # never the whole (wrong) blob
    await settle(tier)
    assert tier.local_path(d) is None and not hot_file(tier, d).exists()
    assert list(tier.files.promoting.glob("*.part")) == []
    cold.corrupt, cold.chunk_delay = False, 0.0
    assert await read_all(tier, d) == data  # a later read promotes it properly
    await settle(tier)
    assert tier.local_path(d) is not None
    await tier.aclose()


async def test_crash_leftovers_are_cleaned_and_orphans_adopted(cold: CountingStore,
                                                              tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    d = await blob(cold, b"adopt me")
    await read_all(tier, d)
    await settle(tier)
    await tier.aclose()
    tier.index.close()
    (tmp_path / "hot" / "tier.db").unlink()  # the row is lost, the copy is there
    half = Digest.of(b"half")
    for suffix in ("lock", "part", "error"):  # a leader killed mid-promotion
        (tmp_path / "hot" / "promoting" / f"sha256-{half.hex}.{suffix}").write_bytes(b"ha")
    again = tiered(cold, tmp_path / "hot", promote_after=1)
    assert list((tmp_path / "hot" / "promoting").iterdir()) == []
    assert again.index.hot_bytes() == len(b"adopt me")
    assert again.local_path(d) is not None
    await again.aclose()


async def test_delete_trash_and_quarantine_take_the_hot_copy_along(
        cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    one, two, three = [await blob(cold, bytes([i]) * 10) for i in range(3)]
    for d in (one, two, three):
        await read_all(tier, d)
        await settle(tier)
        assert tier.local_path(d) is not None
    assert await tier.delete(one)
    assert await tier.trash(two, "t") is not None
    assert await tier.quarantine(three, "q") is not None
    for d in (one, two, three):
        assert tier.local_path(d) is None and await tier.stat(d) is None
        assert not hot_file(tier, d).exists()
        with pytest.raises(BlobUnknown):
            await read_all(tier, d)
    assert tier.index.hot_bytes() == 0
    await tier.aclose()


async def test_a_delete_during_a_promotion_wins(cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    data = os.urandom(2 * MiB)
    d = await blob(cold, data)
    cold.chunk_delay = 0.05
    reading = asyncio.ensure_future(read_all(tier, d))
    for _ in range(200):
        if tier.promotions.files.path(d, "part").exists():
            break
        await asyncio.sleep(0.005)
    assert await tier.trash(d, "gc") is not None
    assert await asyncio.wait_for(reading, 10) == data  # its bytes were verified
    await settle(tier)
    assert not hot_file(tier, d).exists() and tier.local_path(d) is None
    await tier.aclose()


async def test_a_blob_too_big_for_the_tier_stays_cold(cold: CountingStore,
                                                      tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1, max_bytes=100)
    d = await blob(cold, b"z" * 80)  # above low_watermark x max_bytes
    for _ in range(3):
        assert await read_all(tier, d) == b"z" * 80
        await settle(tier)
    assert tier.local_path(d) is None
    assert cold.reads == 3
    await tier.aclose()


async def test_an_unknown_blob_is_unknown(cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    with pytest.raises(BlobUnknown):
        await read_all(tier, Digest.of(b"never stored"))
    await tier.aclose()



async def test_a_dead_leaders_part_is_never_followed_the_next_reader_takes_over(
        cold: CountingStore, tmp_path: Path) -> None:
    tier = tiered(cold, tmp_path / "hot", promote_after=1)
    data = os.urandom(MiB + 1)
    d = await blob(cold, data)
    promoting = tier.promotions.files
    promoting.path(d, "lock").write_bytes(b"")  # its leader was killed: nobody holds it
    promoting.path(d, "part").write_bytes(b"garbage from a crashed leader" * 1000)
    assert await asyncio.wait_for(read_all(tier, d), 10) == data
    await settle(tier)
    assert hot_file(tier, d).read_bytes() == data
    assert cold.reads == 1
    await tier.aclose()
