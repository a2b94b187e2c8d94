"""Assemble a layer from a plan: local chunks read from local files, missing ranges fetched
(several at once, each held until its turn), every chunk checked against its BLAKE3 hash
before it is yielded, in offset order, from any starting offset (a resumed fetch).

A local chunk that no longer hashes right (a file changed or went away) is fetched instead;
a fetched chunk that does not hash right means the index is wrong: `DeltaError`, and the
caller falls back to a whole-layer fetch. The layer's SHA-256 is the caller's to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import accumulate

from stablemirror.delta.chunker import chunk_hash
from stablemirror.delta.format import ChunkIndex
from stablemirror.delta.plan import LocalStep, Plan, RemoteStep, Step

PARALLEL = 4
LOCAL_BATCH = 4 << 20

# (start, end) -> exactly bytes [start, end) of the layer; raises DeltaError("no_range")
# when the other side answers without Range support.
RangeFetch = Callable[[int, int], Awaitable[bytes]]


class DeltaError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Assembly:
    """One pass over a plan; counts what it reused and fetched."""

    def __init__(self, index: ChunkIndex, plan: Plan, fetch: RangeFetch,
                 parallel: int = PARALLEL) -> None:
        self.index = index
        self.plan = plan
        self.fetch = fetch
        self.parallel = parallel
        self.offsets = [0, *accumulate(index.lengths)]
        self.local_bytes = 0
        self.fetched_bytes = 0
        self.chunks_reused = 0
        self.chunks_fetched = 0

    def _chunk_at(self, pos: int) -> int:
        lo, hi = 0, len(self.index.lengths) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.offsets[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _steps_from(self, pos: int) -> list[Step]:
        steps: list[Step] = []
        for s in self.plan.steps:
            end = s.end if isinstance(s, RemoteStep) else s.offset + s.length
            if end <= pos:
                continue
            if isinstance(s, RemoteStep) and s.start < pos:
                first = self._chunk_at(pos)
                s = RemoteStep(self.offsets[first], s.end, first, s.last)
            steps.append(s)
        return steps

    async def run(self, pos: int = 0) -> AsyncIterator[bytes]:
        steps = self._steps_from(pos)
        remote = [s for s in steps if isinstance(s, RemoteStep)]
        tasks: dict[int, asyncio.Task[bytes]] = {}
        ahead = 0

        def top_up() -> None:
            nonlocal ahead
            while ahead < len(remote) and len(tasks) < self.parallel:
                r = remote[ahead]
                tasks[r.start] = asyncio.ensure_future(self._fetch_checked(r))
                ahead += 1

        try:
            i = 0
            while i < len(steps):
                step = steps[i]
                top_up()
                if isinstance(step, RemoteStep):
                    data = await tasks.pop(step.start)
                    self.fetched_bytes += len(data)
                    self.chunks_fetched += step.last - step.first + 1
                    i += 1
                else:
                    group = [step]
                    while (i + len(group) < len(steps)
                           and isinstance(nxt := steps[i + len(group)], LocalStep)
                           and sum(g.length for g in group) < LOCAL_BATCH):
                        group.append(nxt)
                    data = await self._local(group)
                    i += len(group)
                skip = max(0, pos - _start(step))
                yield data[skip:] if skip else data
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(BaseException):
                    await task

    async def _fetch_checked(self, r: RemoteStep) -> bytes:
        data = await self.fetch(r.start, r.end)
        if len(data) != r.end - r.start:
            raise DeltaError("short_range")
        ok = await asyncio.to_thread(self._check, data, r.first, r.last)
        if not ok:
            raise DeltaError("index_mismatch")
        return data

    def _check(self, data: bytes, first: int, last: int) -> bool:
        view = memoryview(data)
        base = self.offsets[first]
        for i in range(first, last + 1):
            piece = view[self.offsets[i] - base:self.offsets[i + 1] - base]
            if chunk_hash(piece) != self.index.hash_at(i):
                return False
        return True

    async def _local(self, group: list[LocalStep]) -> bytes:
        pieces = await asyncio.to_thread(_read_local, group)
        out = bytearray()
        for step, piece in zip(group, pieces, strict=True):
            if piece is None:  # changed or gone since it was indexed: fetch it instead
                i = self._chunk_at(step.offset)
                piece = await self._fetch_checked(RemoteStep(step.offset,
                                                             step.offset + step.length, i, i))
                self.fetched_bytes += step.length
                self.chunks_fetched += 1
            else:
                self.local_bytes += step.length
                self.chunks_reused += 1
            out += piece
        return bytes(out)


def _start(step: Step) -> int:
    return step.start if isinstance(step, RemoteStep) else step.offset


def _read_local(group: list[LocalStep]) -> list[bytes | None]:
    """Read and check each chunk (in a thread; files opened and closed here)."""
    out: list[bytes | None] = []
    files: dict[str, int] = {}
    try:
        for step in group:
            key = str(step.source.path)
            try:
                if key not in files:
                    files[key] = os.open(key, os.O_RDONLY)
                data = os.pread(files[key], step.length, step.source.offset)
            except OSError:
                out.append(None)
                continue
            out.append(data if len(data) == step.length and chunk_hash(data) == step.hash
                       else None)
    finally:
        for fd in files.values():
            os.close(fd)
    return out
