"""The chunk-index blob, version 1 (pure; docs/delta.md has the byte layout and the numbers).

Binary, 36 bytes a chunk: a 1 TiB layer cut into ~320 KiB chunks takes ~118 MB, where
JSON of the same facts would take several times that and a parser's worth of memory.

    header (72 bytes, little-endian)
      magic  b"SMCI"        version u8 (1)     hash algorithm u8 (1: BLAKE3-256)
      hash length u8 (32)   reserved u8 (0)
      layer size u64        chunk count u64
      FastCDC avg/min/max u32 x3 (the parameters the chunks were cut with)  reserved u32
      layer digest: 32 raw bytes of its SHA-256
    lengths: count x u32     hashes: count x 32 bytes (chunk i is hashes[32i:32i+32])

Offsets are implicit (each chunk starts where the one before ends), so chunks cannot
overlap or leave gaps by construction; the decoder checks the lengths add up to the layer
size and that the blob is exactly as long as its count says, before allocating anything.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"SMCI"
VERSION = 1
BLAKE3 = 1
HASH_LEN = 32
_HEADER = struct.Struct("<4sBBBBQQIIII32s")
HEADER_SIZE = _HEADER.size
RECORD_SIZE = 4 + HASH_LEN
MAX_CHUNK = 16 << 20  # pyfastcdc's own upper bound for max_size


class IndexRejected(ValueError):
    """A chunk index that is malformed, hostile, or for another layer."""


@dataclass(frozen=True, slots=True)
class ChunkParams:
    avg: int
    min: int
    max: int

    @property
    def key(self) -> str:
        """Names the chunking in the local chunk table: equal keys cut equal bytes alike."""
        return f"fastcdc2020:{self.avg}:{self.min}:{self.max}:blake3"


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    length: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class ChunkIndex:
    layer_hex: str  # the layer's SHA-256, hex
    size: int
    params: ChunkParams
    lengths: array  # type: ignore[type-arg]  # array('I')
    hashes: bytes

    def __len__(self) -> int:
        return len(self.lengths)

    def hash_at(self, i: int) -> bytes:
        return self.hashes[i * HASH_LEN:(i + 1) * HASH_LEN]

    def chunks(self) -> Iterator[Chunk]:
        offset = 0
        for i, length in enumerate(self.lengths):
            yield Chunk(offset, length, self.hash_at(i))
            offset += length

    def encode(self) -> bytes:
        lengths = array("I", self.lengths)
        if sys.byteorder != "little":
            lengths.byteswap()
        head = _HEADER.pack(MAGIC, VERSION, BLAKE3, HASH_LEN, 0, self.size, len(self.lengths),
                            self.params.avg, self.params.min, self.params.max, 0,
                            bytes.fromhex(self.layer_hex))
        return head + lengths.tobytes() + self.hashes


def decode(data: bytes, layer_hex: str | None = None, size: int | None = None) -> ChunkIndex:
    """Parse and check an index; `layer_hex` / `size`: what the caller expects it to cover."""
    if len(data) < HEADER_SIZE:
        raise IndexRejected("shorter than its header")
    (magic, version, alg, hash_len, _r1, layer_size, count, avg, min_, max_, _r2,
     raw_digest) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise IndexRejected("not a chunk index (magic)")
    if version != VERSION:
        raise IndexRejected(f"unknown version {version}")
    if alg != BLAKE3 or hash_len != HASH_LEN:
        raise IndexRejected(f"unknown chunk hash {alg}/{hash_len}")
    if not 0 < min_ <= avg <= max_ <= MAX_CHUNK:
        raise IndexRejected("chunk parameters out of range")
    # every chunk holds at least one byte: a count above the size is a lie (checked before
    # the length check below multiplies it)
    if count > layer_size or (layer_size > 0 and count == 0):
        raise IndexRejected("chunk count does not fit the layer size")
    if len(data) != HEADER_SIZE + count * RECORD_SIZE:
        raise IndexRejected("length does not match the chunk count")
    if layer_hex is not None and raw_digest.hex() != layer_hex:
        raise IndexRejected("index is for another layer")
    if size is not None and layer_size != size:
        raise IndexRejected("index is for a layer of another size")
    lengths = array("I")
    lengths.frombytes(data[HEADER_SIZE:HEADER_SIZE + 4 * count])
    if sys.byteorder != "little":
        lengths.byteswap()
    if count and (min(lengths) == 0 or max(lengths) > max_):
        raise IndexRejected("a chunk length is out of range")
    if sum(lengths) != layer_size:
        raise IndexRejected("chunk lengths do not add up to the layer size")
    return ChunkIndex(raw_digest.hex(), layer_size, ChunkParams(avg, min_, max_), lengths,
                      bytes(data[HEADER_SIZE + 4 * count:]))


def max_index_size(layer_size: int, params_min: int = 64) -> int:
    """The largest index blob worth reading for a layer (chunks of at least 64 bytes)."""
    return HEADER_SIZE + (layer_size // params_min + 1) * RECORD_SIZE
