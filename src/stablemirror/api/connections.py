"""Connection guards against slow and greedy clients (slowloris), which aiohttp lacks.

- Header timeout: a request's headers must be complete within `header_timeout_seconds` of
  the connection opening, or of the first byte of the next request on a kept-alive
  connection; else the connection is closed. (Idle kept-alive connections are aiohttp's
  `keepalive_timeout`.)
- Body idle timeout: a request body that stops arriving for `body_idle_timeout_seconds` ends
  the request with 408 and the connection (`body_chunks`, used by api/body.py). Measured
  only while the handler waits for the client, so a slow disk never counts against it.
  Bodies outside /v2/ (token endpoint, admin API: small, read whole) must arrive whole
  within that time.
- Per-client bound: at most `max_per_client` open connections from one IP address per
  worker process; more are answered 503 and closed at once, before anything is parsed.

The guard sits between the transport and aiohttp's protocol (`GuardedProtocol` wraps what
`web.Server` makes), so it sees connections before aiohttp does; `guard_middleware` tells it
when a request's headers were complete (a handler started) and when it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_runner import GracefulExit

from stablemirror.config import ConnectionSettings

KEEPALIVE_TIMEOUT = 75.0  # web.run_app's default (aiohttp's own protocol default is an hour)
REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 31\r\nConnection: close\r\n\r\n"
           b"too many connections from you\r\n")


class ConnectionGuard:
    """The per-worker state: open connections per client address, and which protocol
    serves which transport (for the middleware)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.per_client: dict[str, int] = {}
        self.by_transport: dict[int, GuardedProtocol] = {}

    def protocol(self, server: web.Server) -> GuardedProtocol:
        return GuardedProtocol(self, server)

    def admit(self, client: str) -> bool:
        limit = self.settings.max_per_client
        n = self.per_client.get(client, 0)
        if limit and n >= limit:
            return False
        self.per_client[client] = n + 1
        return True

    def release(self, client: str) -> None:
        n = self.per_client.get(client, 0) - 1
        if n > 0:
            self.per_client[client] = n
        else:
            self.per_client.pop(client, None)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the header deadline and the bound."""

    def __init__(self, guard: ConnectionGuard, server: web.Server) -> None:
        self._guard = guard
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._client: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # a request's headers are in, its handler runs

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(client):
            transport.write(REFUSED)
            transport.close()
            return
        self._client = client
        self._guard.by_transport[id(transport)] = self
        self._inner = self._server()
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self._busy and self._deadline is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._client is not None:
            self._guard.release(self._client)
            self._client = None
        if self._transport is not None:
            self._guard.by_transport.pop(id(self._transport), None)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- what the middleware reports ---------------------------------------------------------
    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_finished(self) -> None:
        self._busy = False

    # -- the header deadline -----------------------------------------------------------------
    def _arm(self) -> None:
        timeout = self._guard.settings.header_timeout_seconds
        if timeout and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if not self._busy and self._transport is not None:
            self._transport.abort()  # nothing useful to tell a client this slow


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app.get(CONNECTION_GUARD)
    protocol = None
    if guard is not None and request.transport is not None:
        protocol = guard.by_transport.get(id(request.transport))
    if guard is None or protocol is None:  # served without the guard (in-process tests)
        return await handler(request)
    protocol.request_started()
    try:
        if request.body_exists and not request.path.startswith("/v2/"):
            # Token and admin bodies are small and read whole by their handlers (post(),
            # json()): read them here, in time, and the handlers get the cached bytes.
            await _read_whole(request, guard.settings.body_idle_timeout_seconds)
        return await handler(request)
    finally:
        protocol.request_finished()


async def _read_whole(request: web.Request, idle_seconds: float) -> None:
    try:
        async with asyncio.timeout(idle_seconds or None):
            await request.read()
    except TimeoutError as e:
        raise web.HTTPRequestTimeout(
            text="request body stalled", headers={"Connection": "close"}) from e


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives; 408 (and the connection closed) when it stops arriving."""
    guard = request.app.get(CONNECTION_GUARD)
    idle = guard.settings.body_idle_timeout_seconds if guard is not None else 0
    while True:
        try:
            async with asyncio.timeout(idle or None):
                data = await request.content.readany()
        except TimeoutError as e:
            raise web.HTTPRequestTimeout(
                text="request body stalled", headers={"Connection": "close"}) from e
        if not data:
            return
        yield data


CONNECTION_GUARD = web.AppKey("connection_guard", ConnectionGuard)


class _GuardedSockSite(web.SockSite):
    """aiohttp's SockSite, with every connection made through the guard."""

    def __init__(self, runner: web.AppRunner, sock: Any, guard: ConnectionGuard) -> None:
        super().__init__(runner, sock)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol(server), sock=self._sock, backlog=self._backlog)


def run_guarded(app: web.Application, sock: Any, loop: asyncio.AbstractEventLoop,
                shutdown_timeout: float) -> None:
    """web.run_app(app, sock=sock, loop=loop) with app[CONNECTION_GUARD] in front of every
    connection: the same runner, signals (SIGTERM: graceful stop) and shutdown."""
    guard = app[CONNECTION_GUARD]

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=True, access_log=None,
                               keepalive_timeout=KEEPALIVE_TIMEOUT,
                               shutdown_timeout=shutdown_timeout)
        await runner.setup()
        try:
            await _GuardedSockSite(runner, sock, guard).start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main_task = loop.create_task(main())
    try:
        loop.run_until_complete(main_task)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main_task.done():
                main_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main_task)
        finally:
            rest = asyncio.all_tasks(loop)
            for task in rest:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
