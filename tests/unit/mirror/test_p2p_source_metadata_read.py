"""The node reads the edge's torrent whole, however its bytes arrive (mirror/p2p_source.py).

aiohttp's `StreamReader.read(n)` returns what is buffered, up to n bytes: a torrent that
came in two TCP segments was read half, failed to decode in libtorrent, and the node fell
back to plain HTTP for the whole blob (seen under load in the podman namespace test: one
node's 32 MiB layer fetched twice from the edge, egress 2.08x)."""

from __future__ import annotations

import asyncio
from unittest import mock

import aiohttp
import pytest

from stablemirror.mirror.p2p_source import read_metadata_body


def _reader(parts: list[bytes]) -> aiohttp.StreamReader:
    reader = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16,
                                  loop=asyncio.get_running_loop())

    async def feed() -> None:
        for part in parts:
            await asyncio.sleep(0.01)  # a later segment: not buffered at the first read
            reader.feed_data(part)
        reader.feed_eof()

    asyncio.get_running_loop().create_task(feed())
    return reader


async def test_a_body_in_several_segments_is_read_whole() -> None:
    parts = [b"d8:announce" + b"x" * 5000, b"y" * 2189, b"e"]
    assert await read_metadata_body(_reader(parts), 1 << 20) == b"".join(parts)


async def test_a_body_over_the_limit_is_cut_one_byte_past_it() -> None:
    body = await read_metadata_body(_reader([b"a" * 700, b"b" * 700]), 1000)
    assert body == b"a" * 700 + b"b" * 301  # the caller sees len > limit: too large


async def test_an_empty_body_is_empty() -> None:
    assert await read_metadata_body(_reader([]), 10) == b""


@pytest.mark.parametrize("limit", [1, 4])
async def test_the_limit_holds_for_tiny_limits(limit: int) -> None:
    assert len(await read_metadata_body(_reader([b"abcdefgh"]), limit)) == limit + 1
