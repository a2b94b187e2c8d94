"""Per-request telemetry: HTTP metrics, pull accounting and one access-log line.

The middleware is the outermost one, so it sees the status the client really got (after
`oci_errors` turned exceptions into responses). A response a handler returns unsent (a
manifest, an error, a FileResponse) would be sent by aiohttp after the middlewares return;
the middleware sends it itself, so that the duration runs to the last byte and a client that
hangs up mid-body is seen. Streamed blobs (api/sendfile.py) are sent inside the handler and
raise on a hang-up, which lands here too.

Pull accounting (docs/metrics.md): every GET of a manifest or a blob counts once in
`pulls_total`; one that did not succeed also counts in `pull_failures_total` with its reason.
HEADs are not pulls: clients HEAD before they GET, and counting both would double the rate.
Blob bytes are counted when a blob GET completes, as the Content-Length of what was sent
(the range for a 206): sendfile does not report partial progress, so an aborted transfer
counts as a `client_abort` failure and adds no bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from stablemirror.api.blobs import BLOB_SOURCE_KEY
from stablemirror.api.context import ACTOR_KEY, context
from stablemirror.api.keys import METRICS
from stablemirror.api.routes import PARAMS_KEY, ROUTE_KEY
from stablemirror.metrics import FailureReason, Kind, Source

CLIENT_CLOSED = 499  # recorded (never sent) when the client hung up, as nginx does
PROBE_ROUTES = frozenset({"healthz", "readyz", "metrics"})  # logged at debug: polled often

access_log = logging.getLogger("stablemirror.access")


def failure_reason(status: int) -> FailureReason | None:
    if status < 400:
        return None
    if status == 404:
        return "not_found"
    if status in (401, 403):
        return "denied"
    if status in (502, 503, 504):
        return "upstream"  # the mirror could not get it from any upstream
    return "invalid" if status < 500 else "error"


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _route(request: web.Request) -> str:
    route = request.get(ROUTE_KEY)
    if isinstance(route, str):
        return route
    name = request.match_info.route.name
    return name if name else "unmatched"


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer carries the id its log line carries."""
    response.headers["X-Request-ID"] = context(request).request_id


class _Sent(web.StreamResponse):
    """What aiohttp gets back for a response the middleware has already sent: preparing it
    again must do nothing (a FileResponse would open and send its file a second time)."""

    def __init__(self, sent: web.StreamResponse) -> None:
        super().__init__(status=sent.status, reason=sent.reason)
        self._sent = sent

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None

    @property
    def keep_alive(self) -> bool | None:
        return self._sent.keep_alive

    @property
    def body_length(self) -> int:
        return self._sent.body_length


@web.middleware
async def telemetry(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    status = 500
    aborted = False
    try:
        response = await handler(request)
        await response.prepare(request)
        await response.write_eof()
        status = response.status
        return _Sent(response)
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (OSError, asyncio.CancelledError) as exc:
        if not _client_gone(request):
            raise
        aborted, status = True, CLIENT_CLOSED
        if isinstance(exc, asyncio.CancelledError):
            raise
        # Raising would make aiohttp log a traceback for an ordinary hang-up; a response
        # it then fails to send on the dead connection is dropped quietly.
        return _Sent(response) if response is not None else web.Response(status=CLIENT_CLOSED)
    finally:
        _record(request, response, status, aborted, time.perf_counter() - started)


def _record(request: web.Request, response: web.StreamResponse | None, status: int,
            aborted: bool, seconds: float) -> None:
    metrics = request.app[METRICS]
    route = _route(request)
    metrics.http_request(request.method, route, status, seconds)
    params: dict[str, str] = request.get(PARAMS_KEY) or {}
    repository = params.get("name")
    sent = 0
    if response is not None and not aborted:
        sent = response.content_length if response.content_length is not None else (
            response.body_length)
    if request.method == "GET" and route in ("manifest", "blob") and repository is not None:
        kind: Kind = "manifest" if route == "manifest" else "blob"
        metrics.pull(kind, repository)
        reason = "client_abort" if aborted else failure_reason(status)
        if reason is not None:
            metrics.pull_failure(kind, repository, reason)
        elif kind == "blob" and status in (200, 206):
            source: Source = request.get(BLOB_SOURCE_KEY, "local")
            metrics.blob_bytes_served(source, sent)
    level = (logging.DEBUG if route in PROBE_ROUTES
             else logging.WARNING if status >= 500 and not aborted else logging.INFO)
    if access_log.isEnabledFor(level):
        _log(request, route, params, status, aborted, sent, seconds, level)


def _log(request: web.Request, route: str, params: dict[str, str], status: int,
         aborted: bool, sent: int, seconds: float, level: int) -> None:
    fields: dict[str, Any] = {
        "request_id": context(request).request_id,
        "method": request.method,
        "route": route,
        "repository": params.get("name"),
        "reference": params.get("reference") or params.get("digest"),
        "status": status,
        "bytes": sent,
        "bytes_in": request.content_length or 0,
        "duration_ms": round(seconds * 1000, 3),
        "user": request.get(ACTOR_KEY) or context(request).actor,
        "client": request.remote,
    }
    if aborted:
        fields["outcome"] = "client_abort"
    access_log.log(level, "%s %s %d", request.method, request.path, status,
                   extra={"fields": fields})
