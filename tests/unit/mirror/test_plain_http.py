"""Blob bodies read off a plain-HTTP socket by the `.part` writer (mirror/plain_http.py,
part_writer.py `receive`): used for 200/206 answers, resumed after a cut or a silent
upstream, never published when the bytes are wrong, stopped at once on shutdown, and
anything else left to aiohttp. A scripted HTTP server on loopback plays the upstream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.config import UpstreamGroupSettings, UpstreamSettings
from stablemirror.mirror.fetch import BlobFetches, FetchAborted, FetchFailed
from stablemirror.mirror.part_writer import PartWriter
from stablemirror.mirror.plain_http import SocketBody
from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import HttpClient, UpstreamGroup
from stablemirror.oci.digest import Digest
from stablemirror.store.filesystem import FilesystemBlobStore

SIZE = 6 << 20 | 12345  # several receive buffers and a ragged end


@dataclass
class Reply:
    """What the scripted upstream does for one request: answer `status`, then send
    `body[offset:]` up to `cut` bytes of the blob (None: all), then stall or close."""

    status: int = 200
    cut: int | None = None
    stall: bool = False
    corrupt: bool = False


@dataclass
class ScriptedUpstream:
    data: bytes
    replies: list[Reply]
    ranges: list[str] = field(default_factory=list)  # the Range header of each request
    stalled: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
            self.ranges.append(fields.get("Range", ""))
            reply = self.replies.pop(0) if self.replies else Reply()
            if reply.status not in (200, 206):
                writer.write(f"HTTP/1.1 {reply.status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
                writer.close()
                return
            start = int(fields["Range"][6:-1]) if fields.get("Range") else 0
            status = "206 Partial" if start else "200 OK"
            extra = f"Content-Range: bytes {start}-{len(self.data) - 1}/{len(self.data)}\r\n"
            writer.write((f"HTTP/1.1 {status}\r\nContent-Length: {len(self.data) - start}\r\n"
                          f"{extra if start else ''}\r\n").encode())
            end = len(self.data) if reply.cut is None else reply.cut
            body = self.data[start:end]
            if reply.corrupt:
                body = body[:-1] + bytes([body[-1] ^ 1])
            writer.write(body)
            await writer.drain()
            if reply.stall:
                self.stalled.set()
                await asyncio.sleep(60)
            writer.close()


class LinkRecordingIndex:
    async def link_blob(self, repository: str, digest: Digest, size: int) -> None:
        pass


@dataclass
class Mirror:
    fetches: BlobFetches
    store: FilesystemBlobStore
    source: GroupBlobSource
    upstream: ScriptedUpstream
    digest: Digest


@pytest.fixture
async def mirror(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Mirror]]]:
    servers: list[asyncio.Server] = []
    clients: list[HttpClient] = []
    data = os.urandom(SIZE)

    async def serve(upstream: ScriptedUpstream) -> str:
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def make(*replies: Reply, read_timeout: float = 15.0,
                   backup: ScriptedUpstream | None = None) -> Mirror:
        upstream = ScriptedUpstream(data, list(replies))
        urls = [UpstreamSettings(url=await serve(upstream), max_fails=1, fail_timeout=60)]
        if backup is not None:
            backup.data = data
            urls.append(UpstreamSettings(url=await serve(backup), backup=True))
        client = HttpClient()
        await client.start()
        clients.append(client)
        settings = UpstreamGroupSettings(upstreams=urls, health_check_interval=0,
                                         read_timeout=read_timeout, max_attempts=3)
        group = UpstreamGroup("g", settings, client, "1.1 test (stablemirror)")
        digest = Digest.of(data)
        store = FilesystemBlobStore(tmp_path / "data")
        fetches = BlobFetches(tmp_path / "data" / "fetch", store,
                              cast(RegistryIndex, LinkRecordingIndex()))
        return Mirror(fetches, store, GroupBlobSource(group, "lib/app", digest, ""),
                      upstream, digest)

    yield make
    for server in servers:
        server.close()
    for client in clients:
        await client.close()


async def _pull(m: Mirror) -> bytes:
    await m.fetches.ensure(m.digest, "lib/app", m.source)
    got = b"".join([c async for c in m.fetches.stream(m.digest, 0, SIZE, "lib/app", m.source)])
    await asyncio.wait_for(asyncio.gather(*m.fetches._tasks.values()), 10)
    return got


def _published(m: Mirror) -> bytes | None:
    path = m.store.local_path(m.digest)
    return path.read_bytes() if path is not None and path.exists() else None


def _count_receives(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    bodies: list[int] = []
    real = PartWriter.receive

    async def receive(self: PartWriter, body: SocketBody) -> tuple[int, str | None]:
        bodies.append(body.length)
        return await real(self, body)

    monkeypatch.setattr(PartWriter, "receive", receive)
    return bodies


async def test_a_plain_body_is_received_by_the_writer_and_published(
        mirror: Callable[..., Awaitable[Mirror]], monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = _count_receives(monkeypatch)
    m = await mirror(Reply())
    assert await _pull(m) == m.upstream.data
    assert _published(m) == m.upstream.data
    assert bodies == [SIZE]  # off the socket, not through aiohttp's stream
    assert m.upstream.ranges == [""]


async def test_a_cut_plain_body_resumes_from_the_bytes_received(
        mirror: Callable[..., Awaitable[Mirror]], monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = _count_receives(monkeypatch)
    cut = 3 << 20 | 777  # mid-buffer: the partial buffer is written too, then resumed after
    m = await mirror(Reply(cut=cut), Reply())
    assert await _pull(m) == m.upstream.data
    assert _published(m) == m.upstream.data
    assert m.upstream.ranges == ["", f"bytes={cut}-"]
    assert bodies == [SIZE, SIZE - cut]


async def test_a_silent_plain_upstream_hits_the_read_timeout_and_resumes(
        mirror: Callable[..., Awaitable[Mirror]]) -> None:
    cut = 2 << 20 | 5
    m = await mirror(Reply(cut=cut, stall=True), Reply(), read_timeout=0.3)
    assert await asyncio.wait_for(_pull(m), 10) == m.upstream.data
    assert m.upstream.ranges == ["", f"bytes={cut}-"]
    assert _published(m) == m.upstream.data


async def test_a_cut_plain_body_counts_against_its_upstream_and_fails_over(
        mirror: Callable[..., Awaitable[Mirror]]) -> None:
    """As on aiohttp's path, a body that breaks is a failure of that upstream: with
    max_fails 1 the resume goes to the backup, and the primary is not asked again."""
    cut = 1 << 20 | 3
    backup = ScriptedUpstream(b"", [])
    m = await mirror(Reply(cut=cut), backup=backup)
    assert await _pull(m) == m.upstream.data
    assert m.upstream.ranges == [""]
    assert backup.ranges == [f"bytes={cut}-"]
    assert _published(m) == m.upstream.data


async def test_wrong_plain_bytes_are_never_published_nor_ended_cleanly(
        mirror: Callable[..., Awaitable[Mirror]]) -> None:
    m = await mirror(Reply(corrupt=True))
    await m.fetches.ensure(m.digest, "lib/app", m.source)
    received = 0
    with pytest.raises(FetchAborted):
        async for chunk in m.fetches.stream(m.digest, 0, SIZE, "lib/app", m.source):
            received += len(chunk)
    assert received < SIZE  # the last byte is held back: no clean end with wrong bytes
    await asyncio.wait_for(asyncio.gather(*m.fetches._tasks.values()), 10)
    assert _published(m) is None
    assert not m.fetches.files.path(m.digest, "part").exists()
    assert m.fetches.files.error(m.digest, 0) is not None


async def test_other_answers_go_through_aiohttp(mirror: Callable[..., Awaitable[Mirror]]) -> None:
    """A 404 on the plain path is asked again through upstream.py, which owns the meaning
    of every non-success answer: here the authoritative 404."""
    m = await mirror(Reply(status=404), Reply(status=404))
    with pytest.raises(FetchFailed) as failed:
        await asyncio.wait_for(m.fetches.ensure(m.digest, "lib/app", m.source), 10)
    assert failed.value.status == 404
    assert len(m.upstream.ranges) == 2
    assert _published(m) is None


async def test_shutdown_stops_a_receiving_writer_at_once(
        mirror: Callable[..., Awaitable[Mirror]]) -> None:
    """A leader cancelled mid-body (aclose) cuts the socket: the writer thread does not sit
    out the 15 s read timeout, and the fetch lock is free for the next leader."""
    m = await mirror(Reply(cut=1 << 20, stall=True))
    await m.fetches.ensure(m.digest, "lib/app", m.source)
    await asyncio.wait_for(m.upstream.stalled.wait(), 10)
    part = m.fetches.files.path(m.digest, "part")
    for _ in range(200):  # the sent MiB still has to cross loopback: at most 10 s
        if part.stat().st_size == 1 << 20:
            break
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(m.fetches.aclose(), 5)
    threads = [t for t in threading.enumerate() if t.name == "part-writer"]
    for thread in threads:
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()
    assert loop.time() - started < 3
    assert part.stat().st_size == 1 << 20  # kept for the next leader to resume after
    assert _published(m) is None
