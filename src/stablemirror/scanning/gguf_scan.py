"""GGUF (llama.cpp): magic, version, key/value metadata, tensor infos, aligned data.

Checked without reading tensor data: version 1-3, counts that fit the file, every string
and array length inside the file, known value types, tensor type ids below 64 (sizes
from the ggml block table; ids it lacks, newer formats, get offset checks only), at most
4 dimensions, tensor offsets aligned and inside the data area, no two tensors overlapping.
"""

from __future__ import annotations

import io
import math
import struct
from typing import IO

from stablemirror.scanning.findings import Findings

MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_STRING = 1 << 30
# ggml type id -> (elements per block, bytes per block)
GGML_TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
              8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
              13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
              18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
              23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
              29: (256, 56), 30: (1, 2), 31: (32, 18), 32: (32, 18), 33: (32, 18),
              34: (256, 54), 35: (256, 66), 39: (32, 17)}
# ids below this that the table lacks (newer formats): offsets checked, sizes not
MAX_TYPE_ID = 64
# value type -> fixed size (8: string, 9: array)
VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class _Bad(Exception):
    pass


class _Cursor:
    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.s = stream
        self.size = size
        self.pos = 0
        self.wide = True  # GGUF v2+ counts and lengths are u64; v1's were u32

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"read of {n} bytes at byte {self.pos} runs past the end")
        data = self.s.read(n)
        if len(data) != n:
            raise _Bad(f"truncated at byte {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Bad(f"{n} bytes at byte {self.pos} run past the end")
        self.s.seek(n, io.SEEK_CUR)
        self.pos += n

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def count(self) -> int:
        return self.u64() if self.wide else self.u32()

    def string(self) -> bytes:
        n = self.count()
        if n > MAX_STRING:
            raise _Bad(f"string of {n} bytes at byte {self.pos}")
        return self.take(n)


def scan_gguf(stream: IO[bytes], out: Findings) -> None:
    here = stream.tell()
    size = stream.seek(0, io.SEEK_END) - here
    stream.seek(here)
    c = _Cursor(stream, size)
    try:
        _scan(c, out)
    except _Bad as e:
        out.add("malformed", "gguf", str(e), c.pos)


def _value(c: _Cursor, vtype: int, depth: int = 0) -> int | bytes | None:
    if vtype == 8:
        return c.string()
    if vtype == 9:
        if depth:
            raise _Bad("nested arrays")
        inner, count = c.u32(), c.count()
        if inner in VALUE_SIZES:
            c.skip(VALUE_SIZES[inner] * count)
            return None
        if inner not in (8, 9):
            raise _Bad(f"unknown array element type {inner}")
        if count > c.size:
            raise _Bad(f"array of {count} elements in a {c.size}-byte file")
        for _ in range(count):
            _value(c, inner, depth + 1)
        return None
    if vtype not in VALUE_SIZES:
        raise _Bad(f"unknown value type {vtype} at byte {c.pos}")
    raw = c.take(VALUE_SIZES[vtype])
    return int.from_bytes(raw, "little") if vtype in (4, 10) else None


def _scan(c: _Cursor, out: Findings) -> None:
    if c.take(4) != MAGIC:
        raise _Bad("no GGUF magic")
    version = c.u32()
    if version not in (1, 2, 3):
        raise _Bad(f"unknown GGUF version {version}")
    c.wide = version > 1
    n_tensors, n_kv = c.count(), c.count()
    if n_tensors > c.size // 24 or n_kv > c.size // 12:  # smallest possible entries
        raise _Bad(f"{n_tensors} tensors / {n_kv} keys cannot fit in {c.size} bytes")
    alignment = 32
    for _ in range(n_kv):
        key = c.string()
        value = _value(c, c.u32())
        if key == b"general.alignment" and isinstance(value, int):
            alignment = value
    if alignment <= 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment {alignment} is not a power of two")
    infos: list[tuple[int, int, bytes]] = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.u32()
        if n_dims > MAX_DIMS:
            raise _Bad(f"tensor {name!r}: {n_dims} dimensions (at most {MAX_DIMS})")
        dims = [c.count() for _ in range(n_dims)]
        ttype, offset = c.u32(), c.u64()
        if ttype >= MAX_TYPE_ID:
            raise _Bad(f"tensor {name!r}: unknown ggml type {ttype}")
        block, block_bytes = GGML_TYPES.get(ttype, (1, 0))
        elements = math.prod(dims)
        if dims and dims[0] % block:
            raise _Bad(f"tensor {name!r}: row of {dims[0]} is not whole blocks of {block}")
        infos.append((offset, elements // block * block_bytes, name))
    data_start = -(-c.pos // alignment) * alignment
    data_size = c.size - data_start
    end = 0
    for offset, nbytes, name in sorted(infos):
        if offset % alignment:
            out.add("malformed", "gguf", f"tensor {name!r}: offset {offset} not aligned")
        if offset < end:
            out.add("malformed", "gguf", f"tensor {name!r} overlaps the previous tensor")
        if offset + nbytes > data_size:
            out.add("malformed", "gguf",
                    f"tensor {name!r}: {nbytes} bytes at {offset} run past the data area "
                    f"({data_size} bytes)")
        end = max(end, offset + nbytes)
