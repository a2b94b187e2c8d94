"""Zero-copy blob responses that work on uvloop.

aiohttp's FileResponse relies on `loop.sendfile`, which uvloop does not implement, so it
silently falls back to read-and-write copies through Python. Here the headers go out
through the transport as usual, then the body is sent with sendfile(2) from a worker
thread that waits for socket writability with poll(2): no copies through user space, and
the event loop stays free. Threads come from a dedicated pool (many transfers block at once).
"""

from __future__ import annotations

import asyncio
import os
import select
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from stablemirror.api.ranges import parse_range
from stablemirror.oci.errors import BlobUnknown

STALL_SECONDS = 120.0  # a client that accepts nothing for this long is dropped
SENDFILE_MAX = 1 << 30


def _sendfile_all(out_fd: int, in_fd: int, offset: int, count: int) -> None:
    poller = select.poll()
    poller.register(out_fd, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(out_fd, in_fd, offset, min(count, SENDFILE_MAX))
        except BlockingIOError:
            if not poller.poll(STALL_SECONDS * 1000):
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            raise EOFError("blob file shorter than its recorded size")
        offset += sent
        count -= sent


async def _flushed(transport: asyncio.Transport) -> None:
    """Wait until the transport has written everything queued before us (the headers)."""
    for _ in range(int(STALL_SECONDS * 1000)):
        if transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.001)
    raise TimeoutError("client stopped reading")


Regions = Callable[[int, int], AsyncIterator[tuple[int, int, int]]]


async def send_blob_file(request: web.Request, path: Path, size: int, headers: dict[str, str],
                         pool: ThreadPoolExecutor) -> web.StreamResponse:
    try:  # opened before the headers, so a blob that vanished is still a clean 404
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise BlobUnknown(digest=headers.get("Docker-Content-Digest", "")) from e

    async def whole_file(offset: int, length: int) -> AsyncIterator[tuple[int, int, int]]:
        yield fd, offset, length

    try:
        return await send_regions(request, size, headers, pool, whole_file)
    finally:
        os.close(fd)


async def send_regions(request: web.Request, size: int, headers: dict[str, str],
                       pool: ThreadPoolExecutor, regions: Regions) -> web.StreamResponse:
    """Answer (with Range) by sendfile(2) of the (fd, offset, count) pieces `regions` yields;
    for a blob still being fetched they arrive as the mirror writes them."""
    rng = parse_range(request.headers.get("Range"), size)
    start, end = rng if rng is not None else (0, size - 1)
    response = web.StreamResponse(status=206 if rng else 200, headers=headers)
    response.content_length = end - start + 1
    if rng:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    await response.prepare(request)
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or sock is None:
        raise ConnectionResetError("client went away")
    if end >= start:
        await _flushed(transport)
        loop = asyncio.get_running_loop()
        try:
            async for fd, offset, count in regions(start, end - start + 1):
                await loop.run_in_executor(pool, _sendfile_all, sock.fileno(), fd, offset,
                                           count)
        except Exception as e:
            # Never a clean end after a short or unverifiable body: drop the connection.
            transport.abort()
            raise ConnectionResetError(f"blob send failed: {e!r}") from e
    await response.write_eof()
    return response
