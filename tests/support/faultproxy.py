"""A fault-injecting HTTP/1.1-aware TCP proxy for the mirror tests.

It sits between a mirror and its upstream registry on loopback and runs its own asyncio
loop in a background thread. It understands HTTP/1.1 framing (requests one at a time per
connection, Content-Length / chunked / until-close bodies) so that faults can target the
*body* of one response, and so that every exchange is recorded.

Modes (switch at runtime with `set(mode, **params)`, thread-safe):

    pass      forward everything (optionally throttled: `rate` bytes/second per response)
    cut       forward `after` bytes of a matching response body, then drop the connection
    stall     forward `after` body bytes, then stop forwarding for `seconds` (or until the
              mode is changed), then go on
    status    answer `code` (503, 429, ...) to matching requests instead of forwarding
    refuse    close the listening socket (connections are refused) and drop live connections
    reset     accept, then reset (RST) every connection / request
    corrupt   flip one byte (xor 0xff) at body offset `offset` of matching responses
    delay     hold matching requests `seconds` before forwarding them (a slow upstream)
    norange   drop the Range header of matching requests (an upstream without Range support)

`match` (a substring of the request path; default: blob GETs for cut/stall/corrupt, every
request for status) selects the exchanges a fault applies to, and `times` (default 1 for
cut/stall, unlimited otherwise) how many of them; then the proxy reverts to `pass`.

Counting: bytes forwarded upstream->client in total (`forwarded_bytes`), per connection
(`connections`), and per exchange (`exchanges`: method, path, request headers, status, body
bytes forwarded, the fault applied). Helpers sum these by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BLOB_GET = "/blobs/sha256:"
READ_SIZE = 256 * 1024
HEAD_LIMIT = 64 * 1024
MODES = ("pass", "cut", "stall", "status", "refuse", "reset", "corrupt", "delay", "norange")
REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class _Dropped(Exception):
    """The proxy decided to drop this connection (a fault, a refuse, a stop)."""


@dataclass
class Fault:
    mode: str = "pass"
    after: int = 0
    seconds: float = 0.0
    code: int = 503
    offset: int = 0
    match: str | None = None
    methods: tuple[str, ...] = ()
    times: int | None = None
    rate: float | None = None  # bytes/second per response, any mode
    generation: int = 0

    def applies(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return self.match is None or self.match in path


@dataclass
class Exchange:
    conn: int
    method: str
    path: str
    headers: dict[str, str]
    started: float
    status: int | None = None
    body_bytes: int = 0  # response body bytes forwarded to the client
    head_bytes: int = 0
    fault: str | None = None  # the fault applied to this exchange, if any
    complete: bool = False  # the whole response body was forwarded


@dataclass
class Connection:
    id: int
    forwarded: int = 0  # upstream->client bytes
    client: asyncio.StreamWriter | None = None
    upstream: asyncio.StreamWriter | None = None
    exchanges: list[Exchange] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target: str, name: str = "proxy") -> None:
        host, _, port = target.rpartition(":")
        self.target = (host.removeprefix("http://") or "127.0.0.1", int(port))
        self.name = name
        self.port = 0
        self._lock = threading.Lock()
        self._fault = Fault()
        self._generation = 0  # bumped by set(): ends stalls in progress
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self.connections: list[Connection] = []
        self.exchanges: list[Exchange] = []
        self.forwarded_bytes = 0
        self.accepted = 0
        self.errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            # stopped: drop whatever is left, then close
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with self._lock:
            self._generation += 1
        with contextlib.suppress(Exception):
            self._call(self._close_all(listener=True), timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=HEAD_LIMIT,
                                                  backlog=256)

    async def _close_all(self, listener: bool) -> None:
        if listener and self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        """Abort both sides; bytes still in the client transport's buffer were never sent,
        so they are taken off the counters."""
        client = conn.client
        if client is not None and not client.transport.is_closing():
            lost = client.transport.get_write_buffer_size()
            if lost:
                with self._lock:
                    self.forwarded_bytes -= lost
                    conn.forwarded -= lost
                    if conn.exchanges:
                        conn.exchanges[-1].body_bytes -= lost
        for w in (client, conn.upstream):
            if w is not None:
                w.transport.abort()

    # -- control ----------------------------------------------------------------------------------
    def set(self, mode: str, *, after: int = 0, seconds: float = 30.0, code: int = 503,
            offset: int = 0, match: str | None = None, methods: tuple[str, ...] | None = None,
            times: int | None = None, rate: float | None = None) -> None:
        """Switch mode; takes effect for the next request (stalls in progress are released)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        body_fault = mode in ("cut", "stall", "corrupt")
        if match is None and body_fault:
            match = BLOB_GET
        if methods is None:
            methods = ("GET",) if body_fault else ()
        if times is None and mode in ("cut", "stall"):
            times = 1
        with self._lock:
            previous = self._fault
            self._generation += 1
            self._fault = Fault(mode, after, seconds, code, offset, match, methods, times, rate,
                                self._generation)
        if mode == "refuse":
            self._call(self._close_all(listener=True))
        elif previous.mode == "refuse":
            self._call(self._listen())

    def pass_through(self) -> None:
        self.set("pass")

    @property
    def mode(self) -> str:
        return self._fault.mode

    def _take(self, method: str, path: str) -> Fault | None:
        """The fault that may apply to a new exchange (status/reset fire at once)."""
        with self._lock:
            f = self._fault
            if f.mode == "pass" or not f.applies(method, path):
                return Fault(rate=f.rate, generation=f.generation) if f.rate else None
        if f.mode in ("status", "reset") and not self._fire(f):
            return None
        return f

    def _fire(self, f: Fault) -> bool:
        """Count one use of `f` (False when its `times` are spent); revert to pass after."""
        with self._lock:
            if f.times is None:
                return True
            if f.times <= 0:
                return False
            f.times -= 1
            if f.times <= 0 and self._fault is f:  # spent: back to pass
                self._fault = Fault(rate=f.rate, generation=f.generation)
            return True

    # -- counters ------------------------------------------------------------------------------
    def reset_counters(self) -> None:
        with self._lock:
            self.exchanges = []
            self.forwarded_bytes = 0
            for c in self.connections:
                c.forwarded = 0

    def requests(self, match: str = "", method: str | None = None) -> list[Exchange]:
        with self._lock:
            found = list(self.exchanges)
        return [e for e in found if match in e.path and (method is None or e.method == method)]

    def count(self, match: str = "", method: str | None = None) -> int:
        return len(self.requests(match, method))

    def body_bytes(self, match: str = "", method: str | None = None) -> int:
        return sum(e.body_bytes for e in self.requests(match, method))

    def wait_for(self, check: Callable[[FaultProxy], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: timed out waiting; exchanges: {self.summary()}")

    def summary(self, limit: int = 40) -> str:
        lines = [f"{self.name} -> {self.target[0]}:{self.target[1]} mode={self.mode} "
                 f"forwarded={self.forwarded_bytes}"]
        for e in self.requests()[-limit:]:
            rng = e.headers.get("range", "")
            lines.append(f"  #{e.conn} {e.method} {e.path} {rng} -> {e.status} "
                         f"body={e.body_bytes} fault={e.fault} complete={e.complete}")
        return "\n".join(lines)

    # -- the proxy ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(next(self._ids), client=writer)
        with self._lock:
            self.accepted += 1
            self.connections.append(conn)
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        clean = False  # a normal end: flush what was forwarded, then close
        try:
            if self._fault.mode == "reset":
                _rst(writer)
                return
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    clean = True
                    return  # client closed between requests
                method, path, headers = _parse_request(head)
                exchange = Exchange(conn.id, method, path, headers, time.monotonic())
                with self._lock:
                    self.exchanges.append(exchange)
                conn.exchanges.append(exchange)
                fault = self._take(method, path)
                if fault is not None and fault.mode == "reset":
                    exchange.fault = "reset"
                    _rst(writer)
                    return
                if fault is not None and fault.mode == "status":
                    exchange.fault = f"status {fault.code}"
                    exchange.status = fault.code
                    await _answer(reader, writer, headers, fault.code)
                    clean = True
                    return
                if fault is not None and fault.mode == "delay":
                    exchange.fault = "delay"
                    await self._stall(fault)
                if fault is not None and fault.mode == "norange" and "range" in headers:
                    exchange.fault = "norange"
                    head = b"".join(line for line in head.splitlines(keepends=True)
                                    if not line.lower().startswith(b"range:"))
                if up_reader is None or up_writer is None:
                    try:
                        up_reader, up_writer = await asyncio.wait_for(
                            asyncio.open_connection(*self.target, limit=HEAD_LIMIT), 10)
                    except (OSError, TimeoutError) as e:
                        exchange.fault = f"upstream connect failed: {e!r}"
                        _rst(writer)
                        return
                    conn.upstream = up_writer
                assert up_reader is not None and up_writer is not None
                up_writer.write(head)
                await _relay_body(reader, up_writer, headers)
                await up_writer.drain()
                keep = await self._response(conn, exchange, up_reader, writer, fault)
                if not keep or headers.get("connection", "").lower() == "close":
                    clean = True
                    return
        except _Dropped:
            pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as e:
            self.errors.append(f"#{conn.id}: {e!r}")
        finally:
            if clean:
                for w in (writer, up_writer):
                    if w is not None:
                        w.close()  # flushes the transport's buffer first
            else:
                self._drop(conn)

    async def _response(self, conn: Connection, exchange: Exchange,
                        up: asyncio.StreamReader, client: asyncio.StreamWriter,
                        fault: Fault | None) -> bool:
        """Forward one response; False when the connection must close afterwards."""
        while True:
            try:
                head = await up.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                raise _Dropped() from None  # upstream went away: so does the client
            status, headers = _parse_response(head)
            self._count(conn, exchange, len(head), body=False)
            client.write(head)
            if status >= 200 or status == 101:
                break
        exchange.status = status
        no_body = exchange.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if no_body:
            await client.drain()
            exchange.complete = True
            return headers.get("connection", "").lower() != "close"
        body_fault = fault if fault is not None and fault.mode in (
            "cut", "stall", "corrupt", "pass") else None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._chunked(conn, exchange, up, client, body_fault)
            keep = True
        elif "content-length" in headers:
            await self._copy(conn, exchange, up, client, int(headers["content-length"]),
                             body_fault)
            keep = True
        else:
            await self._copy(conn, exchange, up, client, None, body_fault)
            keep = False
        exchange.complete = True
        return keep and headers.get("connection", "").lower() != "close"

    def _count(self, conn: Connection, exchange: Exchange, n: int, body: bool) -> None:
        with self._lock:
            self.forwarded_bytes += n
            conn.forwarded += n
            if body:
                exchange.body_bytes += n
            else:
                exchange.head_bytes += n

    async def _copy(self, conn: Connection, exchange: Exchange, up: asyncio.StreamReader,
                    client: asyncio.StreamWriter, length: int | None,
                    fault: Fault | None, pos0: int = 0) -> int:
        """Forward `length` body bytes (None: until EOF), applying `fault` at body offsets."""
        pos = pos0
        end = None if length is None else pos0 + length
        started = time.monotonic()
        while end is None or pos < end:
            want = READ_SIZE if end is None else min(READ_SIZE, end - pos)
            received = await up.read(want)
            if not received:
                if end is None:
                    return pos
                raise _Dropped()  # upstream cut the body short: so does the client
            data = bytearray(received)
            if fault is not None:
                if (fault.mode == "corrupt" and pos <= fault.offset < pos + len(data)
                        and self._fire(fault)):
                    data[fault.offset - pos] ^= 0xFF
                    exchange.fault = "corrupt"
                if (fault.mode in ("cut", "stall") and pos + len(data) > fault.after >= pos
                        and self._fire(fault)):
                    exchange.fault = fault.mode
                    head = bytes(data[:fault.after - pos])
                    data = data[fault.after - pos:]
                    if head:
                        self._count(conn, exchange, len(head), body=True)
                        client.write(head)
                        await client.drain()
                        pos += len(head)
                    if fault.mode == "cut":  # flush what was counted, then close (FIN)
                        client.transport.set_write_buffer_limits(0)
                        await client.drain()
                        client.transport.abort()
                        raise _Dropped()
                    await self._stall(fault)
                    fault = None if fault.rate is None else Fault(rate=fault.rate)
                    if not data:
                        continue
            if data:
                self._count(conn, exchange, len(data), body=True)
                client.write(bytes(data))
                await client.drain()
                pos += len(data)
            if fault is not None and fault.rate:
                ahead = (pos - pos0) / fault.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return pos

    async def _stall(self, fault: Fault) -> None:
        """Forward nothing for fault.seconds, or until the mode is switched."""
        deadline = time.monotonic() + fault.seconds
        for _ in range(int(fault.seconds / 0.05) + 1):
            if time.monotonic() >= deadline or self._generation != fault.generation:
                return
            await asyncio.sleep(0.05)

    async def _chunked(self, conn: Connection, exchange: Exchange, up: asyncio.StreamReader,
                       client: asyncio.StreamWriter, fault: Fault | None) -> None:
        pos = 0
        while True:
            line = await up.readuntil(b"\r\n")
            client.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = await up.readuntil(b"\r\n")
                    client.write(t)
                    if t == b"\r\n":
                        break
                await client.drain()
                return
            pos = await self._copy(conn, exchange, up, client, size, fault, pos)
            crlf = await up.readexactly(2)
            client.write(crlf)


# -- HTTP bits -------------------------------------------------------------------------------
def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        k, _, v = line.partition(":")
        k = k.strip().lower()
        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
    return headers


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {lines[0]!r}")
    return parts[0], parts[1], _parse_headers(lines[1:])


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), _parse_headers(lines[1:])


async def _relay_body(reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
    """Forward a request body (the mirror sends none, but tests may push through)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            upstream.write(line)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (t := await reader.readuntil(b"\r\n")) != b"\r\n":
                    upstream.write(t)
                upstream.write(b"\r\n")
                return
            remaining = size + 2
            while remaining:
                data = await reader.read(min(READ_SIZE, remaining))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                upstream.write(data)
                remaining -= len(data)
            await upstream.drain()
    remaining = int(headers.get("content-length", "0") or 0)
    while remaining:
        data = await reader.read(min(READ_SIZE, remaining))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        upstream.write(data)
        remaining -= len(data)
        await upstream.drain()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  headers: dict[str, str], code: int) -> None:
    remaining = int(headers.get("content-length", "0") or 0)
    with contextlib.suppress(asyncio.IncompleteReadError):
        if remaining:
            await reader.readexactly(remaining)
    body = (b'{"errors":[{"code":"UNAVAILABLE","message":"injected by faultproxy",'
            b'"detail":null}]}')
    head = (f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Retry-After: 1\r\nConnection: close\r\n\r\n").encode()
    writer.write(head + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
