"""Which chunks of a new layer are already here, and which byte ranges to fetch (pure).

Missing chunks next to each other become one Range request; two runs separated by local
chunks of at most `gap` bytes become one too (one request costs more than re-fetching a
few KiB: a round trip plus headers), and no range grows past `max_range`, so ranges can be
fetched in parallel and held in memory while they wait their turn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stablemirror.delta.format import ChunkIndex

GAP = 64 * 1024
MAX_RANGE = 8 << 20


@dataclass(frozen=True, slots=True)
class LocalChunk:
    """Where the bytes of a chunk (by hash) already are."""

    path: Path
    offset: int


@dataclass(frozen=True, slots=True)
class LocalStep:
    offset: int  # in the new layer
    length: int
    hash: bytes
    source: LocalChunk


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


def plan(index: ChunkIndex, local: Mapping[bytes, LocalChunk], gap: int = GAP,
         max_range: int = MAX_RANGE) -> Plan:
    chunks = list(index.chunks())
    have = [local.get(c.hash) for c in chunks]
    result = Plan(index.size)
    i = 0
    while i < len(chunks):
        if have[i] is not None:
            source = have[i]
            assert source is not None
            c = chunks[i]
            result.steps.append(LocalStep(c.offset, c.length, c.hash, source))
            i += 1
            continue
        first = i
        end = i  # exclusive: chunks[first:end] go into this range
        while end < len(chunks):
            if chunks[end].offset + chunks[end].length - chunks[first].offset > max_range \
                    and end > first:
                break
            if have[end] is None:
                end += 1
                continue
            # a run of local chunks: bridge it if short and more missing chunks follow
            j = end
            while j < len(chunks) and have[j] is not None:
                j += 1
            bridged = chunks[j - 1].offset + chunks[j - 1].length - chunks[end].offset
            fits = j < len(chunks) and chunks[j].offset + chunks[j].length \
                - chunks[first].offset <= max_range
            if bridged <= gap and fits:
                end = j
                continue
            break
        start = chunks[first].offset
        stop = chunks[end - 1].offset + chunks[end - 1].length
        result.steps.append(RemoteStep(start, stop, first, end - 1))
        i = end
    for step in result.steps:
        if isinstance(step, LocalStep):
            result.local_bytes += step.length
            result.chunks_reused += 1
        else:
            result.remote_bytes += step.length
            result.chunks_fetched += step.last - step.first + 1
    return result
