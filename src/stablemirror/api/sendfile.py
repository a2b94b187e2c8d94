"""Zero-copy blob responses that work on uvloop.

aiohttp's FileResponse relies on `loop.sendfile`, which uvloop does not implement, so it
silently falls back to read-and-write copies through Python. Here the headers go out
through the transport as usual, then the body is sent with sendfile(2) from a worker
thread that waits for socket writability with poll(2): no copies through user space, and
the event loop stays free. Threads come from a dedicated pool (many transfers block at once).

The thread never writes to the transport's fd number: the event loop closes that socket
when the client resets or half-closes, and the next accepted connection gets the same
number. The socket is duplicated while the transport is known open (before any await),
and each transfer thread works on duplicates it owns (files/fd_jobs.py), so a late
write can only reach the client it belongs to, and a client that went away ends the
transfer with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from stablemirror.api.ranges import parse_range
from stablemirror.files.fd_jobs import run_on_dups
from stablemirror.oci.errors import BlobUnknown

STALL_SECONDS = 120.0  # a client that accepts nothing for this long is dropped
POLL_SLICE_MS = 200  # how soon a cancelled transfer's thread notices `stop`
SENDFILE_MAX = 1 << 30


def _sendfile_all(fds: Sequence[int], stop: threading.Event, offset: int, count: int) -> None:
    out_fd, in_fd = fds
    poller = select.poll()
    poller.register(out_fd, select.POLLOUT)
    stalled_since: float | None = None
    while count > 0:
        if stop.is_set():
            raise ConnectionAbortedError("transfer cancelled")
        try:
            sent = os.sendfile(out_fd, in_fd, offset, min(count, SENDFILE_MAX))
        except BlockingIOError:
            if poller.poll(POLL_SLICE_MS):
                stalled_since = None
                continue
            now = time.monotonic()
            stalled_since = stalled_since or now
            if now - stalled_since > STALL_SECONDS:
                raise TimeoutError("client stopped reading") from None
            continue
        if sent == 0:
            raise EOFError("blob file shorter than its recorded size")
        offset += sent
        count -= sent
        stalled_since = None


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
    with contextlib.suppress(OSError):  # "in use" for the hot tier's evictor (store/hot_files)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)

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
    client = _dup_client_socket(request)
    try:
        await response.prepare(request)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        if end >= start:
            await _flushed(transport)
            try:
                async for fd, offset, count in regions(start, end - start + 1):
                    await run_on_dups(pool, (client, fd), _job(offset, count))
            except Exception as e:
                # Never a clean end after a short or unverifiable body: drop the connection.
                transport.abort()
                raise ConnectionResetError(f"blob send failed: {e!r}") from e
    finally:
        os.close(client)
    await response.write_eof()
    return response


def _job(offset: int, count: int) -> Callable[[Sequence[int], threading.Event], None]:
    def job(fds: Sequence[int], stop: threading.Event) -> None:
        _sendfile_all(fds, stop, offset, count)
    return job


def _dup_client_socket(request: web.Request) -> int:
    """A duplicate of the client socket, taken synchronously while the transport is open:
    until `is_closing()` the loop has not closed (let alone reused) the fd number."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if transport is None or sock is None or transport.is_closing() or sock.fileno() < 0:
        raise ConnectionResetError("client went away")
    return os.dup(sock.fileno())
