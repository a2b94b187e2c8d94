"""client/registry.py `read_limited`: a body is read whole however it arrives (the P2P
torrent, a referrers index), and refused above its limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from stablemirror.client.registry import read_limited
from stablemirror.oci.errors import ManifestTooLarge

BODY = bytes(range(256)) * 400  # ~100 KiB, sent in pieces with pauses between


async def _slow(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = len(BODY)
    await response.prepare(request)
    for cut in range(0, len(BODY), 7000):
        await response.write(BODY[cut:cut + 7000])
        await asyncio.sleep(0.005)
    await response.write_eof()
    return response


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_get("/t", _slow)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_a_body_sent_in_pieces_is_read_whole(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/t")
    assert await read_limited(response, 1 << 20) == BODY


async def test_a_body_above_the_limit_is_refused(
        client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/t")
    with pytest.raises(ManifestTooLarge):
        await read_limited(response, 50_000)
