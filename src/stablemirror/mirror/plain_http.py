"""A blob GET to a plain-HTTP upstream whose body a thread reads straight off the socket.

Through aiohttp every received piece of a blob is a new `bytes` made on the event loop's
thread (read, parse, queue, iterate), and the writer and hasher threads wait for the GIL
behind it. For the common case, a `http://` upstream answering 200/206 with a
Content-Length and no transfer coding, this module sends the request and reads the
headers on the loop (non-blocking socket calls), then hands the socket to the `.part`
writer (part_writer.py), whose thread `recv_into`s reused buffers with MSG_WAITALL (one
system call per buffer, the GIL released) and writes them; the event loop only hears
"more bytes are on disk".

Anything else (TLS, a redirect, 401 and every other status, chunked bodies) is not handled
here: `open_plain_blob` returns None and the caller asks again through aiohttp, so auth,
failover and error answers have one implementation (upstream.py). The one-off cost is a
second request for those answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from stablemirror.mirror.upstream import Upstream, UpstreamFailure

HEAD_LIMIT = 64 * 1024  # response headers larger than this: let aiohttp deal with it
READ_PIECE = 1 << 20


def _ignore(_reason: str) -> None:
    pass


@dataclass
class SocketBody:
    """The body of one plain-HTTP blob response, still on its socket.

    `sock` is blocking, with the upstream's read timeout as SO_RCVTIMEO; `head` holds body
    bytes that arrived with the headers; `length` counts the body bytes (head included).
    Whoever reads the body closes `sock`; the connection is never reused."""

    upstream: str
    sock: socket.socket
    head: bytes
    length: int
    # told why the body ended short, as aiohttp's path tells the group (health, failover)
    broke: Callable[[str], None] = _ignore
    _delivered: int = 0  # by iteration

    def close(self) -> None:
        self.sock.close()

    def cut(self) -> None:
        """Make a thread blocked in recv on a duplicate of `sock` return at once."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def __aiter__(self) -> SocketBody:
        return self

    async def __anext__(self) -> bytes:
        """The same bytes as pieces, for a reader that is not the `.part` writer (a
        wrapping source); the socket is closed at the end or at the first error."""
        try:
            if self.head:
                data, self.head = self.head, b""
            elif self._delivered >= self.length:
                raise StopAsyncIteration
            else:
                want = min(READ_PIECE, self.length - self._delivered)
                try:
                    # the thread's own duplicate, taken here while `sock` is surely open
                    data = await asyncio.to_thread(_recv_owned, self.sock.dup(), want)
                except OSError as e:  # a timeout is EAGAIN on this blocking socket
                    self.broke(type(e).__name__)
                    raise UpstreamFailure(self.upstream, type(e).__name__) from e
                if not data:
                    self.broke("truncated")
                    raise UpstreamFailure(self.upstream, "truncated")
        except BaseException:
            self.close()
            raise
        self._delivered += len(data)
        return data


def _recv_owned(own: socket.socket, count: int) -> bytes:
    """recv on a duplicate this thread owns (files/fd_jobs.py: never the loop's number)."""
    with own:
        return own.recv(count)


def is_plain(upstream: Upstream) -> bool:
    return urlsplit(upstream.base).scheme == "http"


@dataclass(frozen=True)
class PlainAnswer:
    status: int  # 200 or 206
    content_range: str  # of a 206, checked by the caller (source.py)
    body: SocketBody


async def open_plain_blob(upstream: Upstream, path: str, headers: dict[str, str],
                          via: str) -> PlainAnswer | None:
    """A 200/206 answer with a Content-Length and an identity body, or None: ask aiohttp.

    Raises UpstreamFailure when the upstream cannot be reached or does not answer in
    time, as aiohttp's path would."""
    parts = urlsplit(upstream.base)
    sock = await _connect(upstream, parts.hostname or "", parts.port or 80)
    try:
        request = _request(parts.netloc, path, upstream.request_headers(headers, via, path))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(upstream.first_byte_timeout):
                await loop.sock_sendall(sock, request)
                status, fields, head = await _read_head(loop, sock)
        except (TimeoutError, OSError) as e:
            raise UpstreamFailure(upstream.name, type(e).__name__) from e
        length = fields.get("content-length", "")
        if (status not in (200, 206) or not length.isdigit() or len(head) > int(length)
                or "transfer-encoding" in fields
                or fields.get("content-encoding", "identity") != "identity"):
            sock.close()
            return None
        sock.setblocking(True)
        seconds = upstream.read_timeout
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000)))
        body = SocketBody(upstream.name, sock, head, int(length))
        return PlainAnswer(status, fields.get("content-range", ""), body)
    except BaseException:
        sock.close()
        raise


async def _connect(upstream: Upstream, host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    reasons: list[str] = []
    try:
        async with asyncio.timeout(upstream.connect_timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            for family, kind, proto, _name, address in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await loop.sock_connect(sock, address)
                    return sock
                except OSError as e:
                    sock.close()
                    reasons.append(type(e).__name__)
                except BaseException:
                    sock.close()
                    raise
    except (TimeoutError, OSError) as e:
        raise UpstreamFailure(upstream.name, type(e).__name__) from e
    raise UpstreamFailure(upstream.name, reasons[-1] if reasons else "no_address")


def _request(netloc: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {netloc}", "Accept-Encoding: identity",
             "Connection: close", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket
                     ) -> tuple[int | None, dict[str, str], bytes]:
    """(status, lower-cased header fields, body bytes read with them); status None when
    the head is malformed or too large (the caller falls back to aiohttp)."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > HEAD_LIMIT:
            return None, {}, b""
        piece = await loop.sock_recv(sock, 65536)
        if not piece:
            raise ConnectionResetError("closed before the response headers")
        data += piece
    lines = data[:end].decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") \
            or not status_line[1].isdigit():
        return None, {}, b""
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None, {}, b""
        fields[name.strip().lower()] = value.strip()
    return int(status_line[1]), fields, data[end + 4:]
