"""The planner (local chunks vs ranges, coalescing) and the assembler (in order, verified,
resumable, falls back chunk by chunk for stale local files, refuses a lying index)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from array import array
from pathlib import Path

import pytest

from stablemirror.delta.assemble import Assembly, DeltaError
from stablemirror.delta.chunker import Indexer, chunk_hash
from stablemirror.delta.format import ChunkIndex, ChunkParams
from stablemirror.delta.plan import LocalChunk, LocalStep, RemoteStep, plan

PARAMS = ChunkParams(avg=4096, min=1024, max=16384)


def _fake_index(lengths: list[int]) -> ChunkIndex:
    hashes = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(len(lengths)))
    return ChunkIndex("00" * 32, sum(lengths), PARAMS, array("I", lengths), hashes)


def _have(index: ChunkIndex, which: set[int]) -> dict[bytes, LocalChunk]:
    return {index.hash_at(i): LocalChunk(Path("/x"), 0) for i in which}


def test_all_local_and_all_missing() -> None:
    index = _fake_index([100] * 5)
    p = plan(index, _have(index, set(range(5))))
    assert all(isinstance(s, LocalStep) for s in p.steps) and p.remote_bytes == 0
    p = plan(index, {})
    assert p.steps == [RemoteStep(0, 500, 0, 4)] and p.chunks_fetched == 5


def test_short_local_gaps_are_bridged_long_ones_are_not() -> None:
    index = _fake_index([100] * 6)
    # missing 0, local 1, missing 2, local 3-5: the 100-byte gap is bridged
    p = plan(index, _have(index, {1, 3, 4, 5}), gap=100)
    assert p.ranges == [RemoteStep(0, 300, 0, 2)]
    assert p.local_bytes == 300 and p.remote_bytes == 300
    # with a smaller gap, two ranges
    p = plan(index, _have(index, {1, 3, 4, 5}), gap=99)
    assert p.ranges == [RemoteStep(0, 100, 0, 0), RemoteStep(200, 300, 2, 2)]
    # a local run at the end is never bridged (nothing missing follows)
    p = plan(index, _have(index, {5}), gap=1000)
    assert p.ranges == [RemoteStep(0, 500, 0, 4)]


def test_ranges_are_split_at_max_range_on_chunk_boundaries() -> None:
    index = _fake_index([100] * 10)
    p = plan(index, {}, max_range=350)
    assert [(r.start, r.end) for r in p.ranges] == [(0, 300), (300, 600), (600, 900),
                                                   (900, 1000)]
    # a single chunk larger than max_range still becomes one range
    assert plan(_fake_index([500]), {}, max_range=100).ranges == [RemoteStep(0, 500, 0, 0)]


def test_local_chunks_in_sequence_in_one_file_are_one_read() -> None:
    index = _fake_index([100] * 6)
    a, b = Path("/a"), Path("/b")
    local = {index.hash_at(0): LocalChunk(a, 1000), index.hash_at(1): LocalChunk(a, 1100),
             index.hash_at(2): LocalChunk(a, 1200),  # 0-2: one run in /a
             index.hash_at(3): LocalChunk(a, 5000),  # not where 2 ends: a new run
             index.hash_at(4): LocalChunk(b, 5100),  # another file: a new run
             index.hash_at(5): LocalChunk(b, 5200)}
    p = plan(index, local)
    assert p.steps == [LocalStep(0, 300, 0, 2, LocalChunk(a, 1000)),
                       LocalStep(300, 400, 3, 3, LocalChunk(a, 5000)),
                       LocalStep(400, 600, 4, 5, LocalChunk(b, 5100))]
    assert p.chunks_reused == 6 and p.local_bytes == 600
    # runs stop at max_read
    p = plan(index, local, max_read=200)
    assert [(s.start, s.end) for s in p.steps] == [(0, 200), (200, 300), (300, 400),
                                                  (400, 600)]


def _real(tmp_path: Path, data: bytes, name: str) -> tuple[ChunkIndex, Path]:
    path = tmp_path / name
    path.write_bytes(data)
    indexer = Indexer(PARAMS)
    indexer.feed(data)
    return indexer.finish(), path


def _local_table(index: ChunkIndex, path: Path) -> dict[bytes, LocalChunk]:
    return {c.hash: LocalChunk(path, c.offset) for c in index.chunks()}


class Upstream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[tuple[int, int]] = []

    async def fetch(self, start: int, end: int) -> bytes:
        self.requests.append((start, end))
        await asyncio.sleep(0)
        return self.data[start:end]


async def _collect(a: Assembly, pos: int = 0) -> bytes:
    return b"".join([piece async for piece in a.run(pos)])


def _v1_v2() -> tuple[bytes, bytes]:
    v1 = os.urandom(400_000)
    v2 = v1[:100_000] + os.urandom(20_000) + v1[100_000:]  # bytes inserted: offsets shift
    return v1, v2


async def test_assembles_v2_from_v1_fetching_little(tmp_path: Path) -> None:
    v1, v2 = _v1_v2()
    old, old_path = _real(tmp_path, v1, "v1")
    new, _ = _real(tmp_path, v2, "v2")
    p = plan(new, _local_table(old, old_path))
    assert len(p.steps) < len(new) / 4  # unchanged stretches are read in runs, not by chunk
    up = Upstream(v2)
    a = Assembly(new, p, up.fetch)
    assert await _collect(a) == v2
    assert 20_000 <= a.fetched_bytes < 20_000 + 4 * PARAMS.max
    assert a.local_bytes + a.fetched_bytes == len(v2)
    assert sum(e - s for s, e in up.requests) == a.fetched_bytes


async def test_resumes_from_any_offset(tmp_path: Path) -> None:
    v1, v2 = _v1_v2()
    old, old_path = _real(tmp_path, v1, "v1")
    new, _ = _real(tmp_path, v2, "v2")
    p = plan(new, _local_table(old, old_path))
    for pos in (1, 99_999, 100_001, 110_000, len(v2) - 1):
        assert await _collect(Assembly(new, p, Upstream(v2).fetch), pos) == v2[pos:]


async def test_a_changed_local_file_is_fetched_instead(tmp_path: Path) -> None:
    v1, v2 = _v1_v2()
    old, old_path = _real(tmp_path, v1, "v1")
    new, _ = _real(tmp_path, v2, "v2")
    p = plan(new, _local_table(old, old_path))
    old_path.write_bytes(os.urandom(len(v1)))  # the local copy changed after indexing
    a = Assembly(new, p, Upstream(v2).fetch)
    assert await _collect(a) == v2
    assert a.local_bytes == 0 and a.fetched_bytes == len(v2)


async def test_a_lying_index_raises(tmp_path: Path) -> None:
    v1, v2 = _v1_v2()
    new, _ = _real(tmp_path, v2, "v2")
    up = Upstream(v1 + v1)  # the upstream serves other bytes than the index describes
    with pytest.raises(DeltaError, match="index_mismatch"):
        await _collect(Assembly(new, plan(new, {}), up.fetch))


def test_chunk_hash_is_blake3_256() -> None:
    assert len(chunk_hash(b"x")) == 32
