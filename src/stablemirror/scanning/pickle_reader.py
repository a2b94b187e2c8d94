"""Bounded, offset-aware reads of a pickle stream: payloads too large to matter are
skipped (by seeking when the stream can), never kept, so a multi-GB pickle is read once."""

from __future__ import annotations

import io
import struct
from typing import IO, Any

READ_CHUNK = 1 << 20
SPECULATIVE_CHUNK = 4096
MAX_LINE = 64 << 20  # protocol 0 text lines (strings, numbers)


class Unfollowable(Exception):
    """The stream cannot be followed to its STOP; the message says why."""


class PickleReader:
    """Buffered reads that know their offset and skip large payloads without keeping them."""

    def __init__(self, stream: IO[bytes], chunk: int = READ_CHUNK) -> None:
        self.stream = stream
        self.chunk = chunk
        try:
            self.origin = stream.tell()  # pos 0 is here in the stream
        except (AttributeError, OSError):
            self.origin = 0
        self.pos = 0
        self._buf = b""
        self._at = 0
        try:
            self._seekable = stream.seekable()
        except (AttributeError, OSError):
            self._seekable = False

    def _fill(self, n: int) -> bool:
        if len(self._buf) - self._at >= n:
            return True
        chunk = self.stream.read(max(self.chunk, n - (len(self._buf) - self._at)))
        self._buf = self._buf[self._at:] + (chunk or b"")
        self._at = 0
        return len(self._buf) >= n

    def unpack(self, unpacker: struct.Struct) -> Any:
        n = unpacker.size
        if len(self._buf) - self._at < n and not self._fill(n):
            raise Unfollowable(f"truncated: needs {n} more bytes at byte {self.pos}")
        value = unpacker.unpack_from(self._buf, self._at)[0]
        self._at += n
        self.pos += n
        return value

    def opcode(self) -> int:
        if self._at >= len(self._buf) and not self._fill(1):
            raise Unfollowable(f"truncated: no STOP before byte {self.pos}")
        code = self._buf[self._at]
        self._at += 1
        self.pos += 1
        return code

    def read(self, n: int) -> bytes:
        if len(self._buf) - self._at < n and not self._fill(n):
            raise Unfollowable(f"truncated: needs {n} more bytes at byte {self.pos}")
        out = self._buf[self._at:self._at + n]
        self._at += n
        self.pos += n
        return out

    def peek_byte(self) -> int | None:
        if not self._fill(1):
            return None
        return self._buf[self._at]

    def skip(self, n: int) -> None:
        have = len(self._buf) - self._at
        if n <= have:
            self._at += n
            self.pos += n
            return
        n_left = n - have
        self._buf, self._at = b"", 0
        self.pos += have
        if self._seekable:
            here = self.stream.tell()
            end = self.stream.seek(0, io.SEEK_END)
            if here + n_left > end:
                raise Unfollowable(f"truncated: a {n}-byte payload runs past the end")
            self.stream.seek(here + n_left)
            self.pos += n_left
            return
        while n_left:
            chunk = self.stream.read(min(READ_CHUNK, n_left))
            if not chunk:
                raise Unfollowable(f"truncated: a {n}-byte payload runs past the end")
            n_left -= len(chunk)
            self.pos += len(chunk)

    def line(self) -> bytes:
        parts = []
        total = 0
        while True:
            if not self._fill(1):
                raise Unfollowable(f"truncated line at byte {self.pos}")
            nl = self._buf.find(b"\n", self._at)
            if nl >= 0:
                part = self._buf[self._at:nl + 1]
                self._at = nl + 1
                self.pos += len(part)
                parts.append(part)
                return b"".join(parts)
            part = self._buf[self._at:]
            self._at = len(self._buf)
            self.pos += len(part)
            parts.append(part)
            total += len(part)
            if total > MAX_LINE:
                raise Unfollowable(f"text line longer than {MAX_LINE} bytes at byte {self.pos}")


