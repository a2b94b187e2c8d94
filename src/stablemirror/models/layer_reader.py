"""One pass over a file's bytes, handed to every consumer that needs them.

`read_once(path, sinks)` reads the file front to back in `CHUNK` pieces and calls each sink
with each piece, in order: the digest, the weight-header sniffer and the small-file keeper
of `pack` are sinks, and a chunk indexer (delta transfer) can be one more without a second
read. It runs in a worker thread (`asyncio.to_thread`); the file object is the thread's own
and closed by it. A file whose size changes while it is read is an error: its digest would
name bytes that are no longer there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from stablemirror.models.weights import (
    HeaderError,
    NeedMore,
    WeightInfo,
    parse_gguf,
    parse_safetensors,
)

CHUNK = 4 << 20
Sink = Callable[[bytes], None]


class FileChanged(OSError):
    pass


def read_once(path: Path, sinks: Sequence[Sink], chunk: int = CHUNK,
              expected_size: int | None = None) -> int:
    """Feed the whole file to every sink; the number of bytes read."""
    total = 0
    with path.open("rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        while piece := f.read(chunk):
            for sink in sinks:
                sink(piece)
            total += len(piece)
        if total != size or (expected_size is not None and total != expected_size):
            raise FileChanged(f"{path}: changed size while it was read")
    return total


class HeaderSniffer:
    """A sink keeping the leading bytes a weight header needs, then parsing it once.

    The parser asks for as many bytes as it needs (`NeedMore`); a re-parse waits until at
    least twice the bytes of the last try are there, so a long header costs a few parses.
    """

    def __init__(self, fmt: str, size: int) -> None:
        self.parse = {"safetensors": parse_safetensors, "gguf": parse_gguf}[fmt]
        self.size = size
        self.head = bytearray()
        self.want = 8
        self.info: WeightInfo | None = None
        self.error: HeaderError | None = None

    def __call__(self, piece: bytes) -> None:
        if self.info is not None or self.error is not None:
            return
        self.head += piece
        if len(self.head) >= self.want:
            self._try(end=False)

    def _try(self, end: bool) -> None:
        try:
            self.info = self.parse(bytes(self.head), self.size)
            self.head = bytearray()
        except NeedMore as more:
            if end:
                self.error = HeaderError("header ends early (file truncated?)")
            self.want = max(more.needed, 2 * len(self.head))
        except HeaderError as e:
            self.error = e
            self.head = bytearray()

    def result(self) -> WeightInfo:
        if self.info is None and self.error is None:
            self._try(end=True)
        if self.error is not None:
            raise self.error
        assert self.info is not None
        return self.info


class SmallFileKeeper:
    """A sink keeping a small file's bytes (config.json), up to `limit`; None past it."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self.data: bytearray | None = bytearray()

    def __call__(self, piece: bytes) -> None:
        if self.data is not None:
            self.data += piece
            if len(self.data) > self.limit:
                self.data = None
