"""The chunk-index blob: round trip, and every malformed or hostile shape refused."""

from __future__ import annotations

import hashlib
import os
import struct
from array import array

import pytest

from stablemirror.delta.chunker import Indexer, index_file
from stablemirror.delta.format import (
    HEADER_SIZE,
    ChunkIndex,
    ChunkParams,
    IndexRejected,
    decode,
)

PARAMS = ChunkParams(avg=4096, min=1024, max=16384)


def _index(data: bytes) -> ChunkIndex:
    indexer = Indexer(PARAMS)
    indexer.feed(data)
    return indexer.finish()


def test_round_trip_and_incremental_feeding_cuts_the_same_chunks() -> None:
    data = os.urandom(300_000)
    whole = _index(data)
    pieces = Indexer(PARAMS)
    for i in range(0, len(data), 777):  # small, unaligned feeds
        pieces.feed(data[i:i + 777])
    assert pieces.finish() == whole
    assert whole.layer_hex == hashlib.sha256(data).hexdigest()
    assert sum(whole.lengths) == len(data) and len(whole) > 10
    back = decode(whole.encode(), whole.layer_hex, len(data))
    assert back == whole
    assert len(whole.encode()) == HEADER_SIZE + 36 * len(whole)


def test_index_file_equals_streamed(tmp_path: object) -> None:
    from pathlib import Path
    path = Path(str(tmp_path)) / "f"
    data = os.urandom(200_000)
    path.write_bytes(data)
    assert index_file(path, params=PARAMS) == _index(data)


def test_empty_layer() -> None:
    empty = _index(b"")
    assert len(empty) == 0 and decode(empty.encode()) == empty


def _mutate(blob: bytes, fmt: str, offset: int, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.fixture
def blob() -> bytes:
    return _index(os.urandom(100_000)).encode()


def test_rejects_wrong_magic_version_and_hash(blob: bytes) -> None:
    with pytest.raises(IndexRejected, match="magic"):
        decode(b"XXXX" + blob[4:])
    with pytest.raises(IndexRejected, match="version"):
        decode(_mutate(blob, "<B", 4, 2))
    with pytest.raises(IndexRejected, match="hash"):
        decode(_mutate(blob, "<B", 5, 9))
    with pytest.raises(IndexRejected, match="header"):
        decode(blob[:10])


def test_rejects_huge_count_before_allocating(blob: bytes) -> None:
    with pytest.raises(IndexRejected, match="count"):
        decode(_mutate(blob, "<Q", 16, 2**62))
    with pytest.raises(IndexRejected, match="length"):
        decode(_mutate(blob, "<Q", 16, 3))  # plausible count, body of another length


def test_rejects_lengths_that_overrun_or_fall_short(blob: bytes) -> None:
    # the first chunk one byte longer: the chunks would run past the layer's end
    first = struct.unpack_from("<I", blob, HEADER_SIZE)[0]
    with pytest.raises(IndexRejected, match="add up"):
        decode(_mutate(blob, "<I", HEADER_SIZE, first + 1))
    with pytest.raises(IndexRejected, match="out of range"):
        decode(_mutate(blob, "<I", HEADER_SIZE, 0))
    with pytest.raises(IndexRejected, match="out of range"):
        decode(_mutate(blob, "<I", HEADER_SIZE, PARAMS.max + 1))
    with pytest.raises(IndexRejected, match="length"):
        decode(blob + b"\0")
    with pytest.raises(IndexRejected, match="length"):
        decode(blob[:-1])


def test_rejects_an_index_for_another_layer(blob: bytes) -> None:
    index = decode(blob)
    with pytest.raises(IndexRejected, match="another layer"):
        decode(blob, "00" * 32)
    with pytest.raises(IndexRejected, match="another size"):
        decode(blob, index.layer_hex, index.size + 1)


def test_rejects_parameters_out_of_range(blob: bytes) -> None:
    with pytest.raises(IndexRejected, match="parameters"):
        decode(_mutate(blob, "<I", 28, 0))  # min 0
    with pytest.raises(IndexRejected, match="parameters"):
        decode(_mutate(blob, "<I", 32, 1 << 30))  # max past 16 MiB


def test_lengths_array_is_compact() -> None:
    index = _index(os.urandom(50_000))
    assert isinstance(index.lengths, array) and index.lengths.itemsize == 4
