from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from stablemirror.models.layer_reader import HeaderSniffer, SmallFileKeeper, read_once
from stablemirror.models.weights import HeaderError


def test_every_sink_sees_every_byte_in_order(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    seen: list[bytes] = []
    h = hashlib.sha256()
    assert read_once(tmp_path / "f", [seen.append, h.update], chunk=1000) == len(data)
    assert b"".join(seen) == data and h.digest() == hashlib.sha256(data).digest()


def test_a_header_longer_than_a_chunk_is_parsed_from_the_same_pass(tmp_path: Path) -> None:
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
              for i in range(2000)}
    raw = json.dumps(header).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 2000)
    size = (tmp_path / "m.safetensors").stat().st_size
    sniffer = HeaderSniffer("safetensors", size)
    calls: list[int] = []
    read_once(tmp_path / "m.safetensors", [sniffer, lambda p: calls.append(len(p))], chunk=4096)
    assert sniffer.result().parameters == 2000
    assert len(calls) > 10  # many chunks went by before the header was whole


def test_a_truncated_header_is_an_error_at_the_end(tmp_path: Path) -> None:
    sniffer = HeaderSniffer("gguf", 30)
    sniffer(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + b"\x05")
    with pytest.raises(HeaderError):
        sniffer.result()


def test_small_file_keeper_gives_up_past_its_limit() -> None:
    keeper = SmallFileKeeper(limit=4)
    keeper(b"abc")
    assert bytes(keeper.data or b"") == b"abc"
    keeper(b"de")
    assert keeper.data is None


def test_analyze_file_hands_the_same_pass_to_extra_sinks(tmp_path: Path) -> None:
    from stablemirror.models.pack import PlannedFile, analyze_file

    data = b"x" * 10_000_000
    (tmp_path / "w.bin").write_bytes(data)
    seen = hashlib.sha256()
    count: list[int] = []
    planned = PlannedFile("w.bin", tmp_path / "w.bin", len(data), "weight", False)
    packed, kept = analyze_file(planned, [seen.update, lambda p: count.append(len(p))])
    assert str(packed.digest) == "sha256:" + seen.hexdigest() == (
        "sha256:" + hashlib.sha256(data).hexdigest())
    assert sum(count) == len(data) and kept is None
    assert packed.weight is not None and packed.weight.format == "pickle"


def test_the_first_failure_of_a_task_group_is_what_surfaces() -> None:
    import asyncio

    from stablemirror.models.pack import first_error
    from stablemirror.oci.errors import BlobUnknown

    async def fail() -> None:
        raise BlobUnknown(digest="sha256:x")

    async def run() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(fail())
        except* Exception as caught:
            raise first_error(caught) from None

    with pytest.raises(BlobUnknown):
        asyncio.run(run())
