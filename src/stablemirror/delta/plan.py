"""Which chunks of a new layer are already here, and which byte ranges to fetch (pure).

Missing chunks next to each other become one Range request; two runs separated by local
chunks of at most `gap` bytes become one too (one request costs more than re-fetching a
few KiB: a round trip plus headers), and no range grows past `max_range`, so ranges can be
fetched in parallel and held in memory while they wait their turn. Local chunks that follow
each other in the same local file become one read of up to `max_read` bytes: a layer that
is mostly unchanged makes few steps, not one per chunk.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from stablemirror.delta.format import ChunkIndex

GAP = 64 * 1024
MAX_RANGE = 8 << 20
MAX_READ = 4 << 20


@dataclass(frozen=True, slots=True)
class LocalChunk:
    """Where the bytes of a chunk (by hash) already are."""

    path: Path
    offset: int


@dataclass(frozen=True, slots=True)
class LocalStep:
    """Bytes [start, end) of the new layer: chunks `first`..`last`, which lie one after the
    other in `source.path` from `source.offset` on."""

    start: int
    end: int
    first: int
    last: int
    source: LocalChunk

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class RemoteStep:
    """Bytes [start, end) of the new layer: whole chunks `first`..`last` (inclusive)."""

    start: int
    end: int
    first: int
    last: int

    @property
    def length(self) -> int:
        return self.end - self.start


Step = LocalStep | RemoteStep


@dataclass
class Plan:
    size: int
    steps: list[Step] = field(default_factory=list)
    local_bytes: int = 0
    remote_bytes: int = 0
    chunks_reused: int = 0
    chunks_fetched: int = 0

    @property
    def ranges(self) -> list[RemoteStep]:
        return [s for s in self.steps if isinstance(s, RemoteStep)]


def offsets_of(index: ChunkIndex) -> array:  # type: ignore[type-arg]
    """Chunk i starts at offsets[i]; offsets[len] is the layer size."""
    return array("Q", accumulate(index.lengths, initial=0))


def plan(index: ChunkIndex, local: Mapping[bytes, LocalChunk], gap: int = GAP,
         max_range: int = MAX_RANGE, max_read: int = MAX_READ) -> Plan:
    n = len(index)
    off = offsets_of(index)
    have = [local.get(index.hash_at(i)) for i in range(n)]
    result = Plan(index.size)
    i = 0
    while i < n:
        source = have[i]
        if source is not None:
            last = i
            while (last + 1 < n and (nxt := have[last + 1]) is not None
                   and nxt.path == source.path
                   and nxt.offset == source.offset + off[last + 1] - off[i]
                   and off[last + 2] - off[i] <= max_read):
                last += 1
            result.steps.append(LocalStep(off[i], off[last + 1], i, last, source))
            i = last + 1
            continue
        first = i
        end = i  # exclusive: chunks first..end-1 go into this range
        while end < n:
            if off[end + 1] - off[first] > max_range and end > first:
                break
            if have[end] is None:
                end += 1
                continue
            # a run of local chunks: bridge it if short and more missing chunks follow
            j = end
            while j < n and have[j] is not None:
                j += 1
            if off[j] - off[end] <= gap and j < n and off[j + 1] - off[first] <= max_range:
                end = j
                continue
            break
        result.steps.append(RemoteStep(off[first], off[end], first, end - 1))
        i = end
    for step in result.steps:
        if isinstance(step, LocalStep):
            result.local_bytes += step.length
            result.chunks_reused += step.last - step.first + 1
        else:
            result.remote_bytes += step.length
            result.chunks_fetched += step.last - step.first + 1
    return result
