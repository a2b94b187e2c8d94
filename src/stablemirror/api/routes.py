"""Route table for /v2/. Repository names contain slashes, so one catch-all route hands
the path to an ordered list of patterns, each matched against the whole path (with DOTALL:
a decoded `%0a` is a character like any other, never the end of a path); the first match
wins. A route's repository name is checked against the spec's grammar before anything else,
authorization included, so a bad name is NAME_INVALID however the server is set up, and
never reaches a header (the Bearer challenge names it) or the index."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from stablemirror.api import blobs, listings, manifests, p2p, uploads
from stablemirror.api.auth import authorize
from stablemirror.api.keys import QUALIFY_NAME
from stablemirror.oci.errors import NameInvalid, Unsupported
from stablemirror.oci.names import validate_name

Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    name: str  # bounded label for logs and metrics
    pattern: re.Pattern[str]
    methods: dict[str, Handler]


def _path(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)  # matched with fullmatch: no `$` before a "\n"


ROUTES: tuple[Route, ...] = (
    Route("catalog", _path(r"_catalog"), {"GET": listings.catalog}),
    Route("tags", _path(r"(?P<name>.+)/tags/list"), {"GET": listings.tags}),
    Route("manifest", _path(r"(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
          {"GET": manifests.get, "HEAD": manifests.get, "PUT": manifests.put,
           "DELETE": manifests.delete}),
    Route("upload_start", _path(r"(?P<name>.+)/blobs/uploads/?"),
          {"POST": uploads.start}),
    Route("upload", _path(r"(?P<name>.+)/blobs/uploads/(?P<upload>[^/]+)"),
          {"GET": uploads.status, "PATCH": uploads.patch, "PUT": uploads.finish,
           "DELETE": uploads.cancel}),
    Route("blob_torrent", _path(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)/torrent"),
          {"GET": p2p.torrent}),  # P2P metadata (api/p2p.py); authorized as a blob pull
    Route("blob_pieces", _path(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)/pieces"),
          {"GET": p2p.pieces}),  # the P2P piece hand-out; authorized as a blob pull
    Route("blob", _path(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
          {"GET": blobs.get, "HEAD": blobs.get, "DELETE": blobs.delete}),
    Route("referrers", _path(r"(?P<name>.+)/referrers/(?P<digest>[^/]+)"),
          {"GET": listings.referrers}),
)

ROUTE_KEY = "stablemirror.route"
PARAMS_KEY = "stablemirror.params"  # the path parameters, for the access log


async def base(request: web.Request) -> web.StreamResponse:
    request[ROUTE_KEY] = "base"
    await authorize(request, "base", {})
    return web.json_response({})


async def dispatch(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        request[ROUTE_KEY] = route.name
        params = match.groupdict()
        qualify = request.app.get(QUALIFY_NAME)
        if "name" in params and qualify is not None and (ns := request.query.get("ns")):
            params["name"] = qualify(ns, params["name"])
        request[PARAMS_KEY] = params
        if "name" in params:
            validate_name(params["name"])
        handler = route.methods.get(request.method)
        if handler is None:
            raise Unsupported(method=request.method, route=route.name)
        await authorize(request, route.name, params)  # no-op unless auth is on
        return await handler(request, **params)
    request[ROUTE_KEY] = "unknown"
    raise NameInvalid(path=path)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/", base)  # add_get: HEAD /v2/ answers too
    app.router.add_get("/v2", base)
    # [\s\S], not `.`: a name holding a decoded newline must reach dispatch (NAME_INVALID),
    # not fall through to aiohttp's plain-text 404.
    app.router.add_route("*", "/v2/{path:[\\s\\S]+}", dispatch)
