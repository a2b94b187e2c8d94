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
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable

from stablemirror.delta.chunker import chunk_hash
from stablemirror.delta.format import ChunkIndex
from stablemirror.delta.plan import LocalStep, Plan, RemoteStep, Step, offsets_of

PARALLEL = 4

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
        self.offsets = offsets_of(index)
        self.local_bytes = 0
        self.fetched_bytes = 0
        self.chunks_reused = 0
        self.chunks_fetched = 0

    def _chunk_at(self, pos: int) -> int:
        """The chunk that holds byte `pos`."""
        return bisect_right(self.offsets, pos) - 1

    def _steps_from(self, pos: int) -> list[Step]:
        steps: list[Step] = []
        for s in self.plan.steps:
            if s.end <= pos:
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
            for step in steps:
                top_up()
                if isinstance(step, RemoteStep):
                    data = await tasks.pop(step.start)
                    self.fetched_bytes += len(data)
                    self.chunks_fetched += step.last - step.first + 1
                else:
                    data = await self._local(step)
                skip = max(0, pos - step.start)
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

    async def _local(self, step: LocalStep) -> bytes:
        pieces = await asyncio.to_thread(self._read_local, step)
        out = bytearray()
        for i, piece in zip(range(step.first, step.last + 1), pieces, strict=True):
            if piece is None:  # changed or gone since it was indexed: fetch it instead
                start, end = self.offsets[i], self.offsets[i + 1]
                piece = await self._fetch_checked(RemoteStep(start, end, i, i))
                self.fetched_bytes += end - start
                self.chunks_fetched += 1
            else:
                self.local_bytes += len(piece)
                self.chunks_reused += 1
            out += piece
        return bytes(out)

    def _read_local(self, step: LocalStep) -> list[bytes | None]:
        """One read of the run, each chunk checked (in a thread; the file is opened and
        closed here)."""
        try:
            fd = os.open(step.source.path, os.O_RDONLY)
        except OSError:
            return [None] * (step.last - step.first + 1)
        try:
            data = os.pread(fd, step.length, step.source.offset)
        except OSError:
            data = b""
        finally:
            os.close(fd)
        view = memoryview(data)
        out: list[bytes | None] = []
        for i in range(step.first, step.last + 1):
            a, b = self.offsets[i] - step.start, self.offsets[i + 1] - step.start
            piece = view[a:b]
            ok = len(piece) == b - a and chunk_hash(piece) == self.index.hash_at(i)
            out.append(bytes(piece) if ok else None)
        return out
