"""GET /_replica/v2/<name>/blobs/<digest>: the blob endpoint other replicas of this mirror
call (mirror/replicas.py). A signed request (mirror/replica_auth.py) instead of a user's
credentials; otherwise the same handler as a client's blob GET, so it streams a blob still
being fetched from its `.part`, Range included. Unsigned or badly signed: 401, nothing read."""

from __future__ import annotations

import dataclasses
import re
import time

from aiohttp import web

from stablemirror.api import blobs
from stablemirror.api.context import CONTEXT_KEY, context
from stablemirror.api.routes import PARAMS_KEY, ROUTE_KEY
from stablemirror.mirror import replica_auth
from stablemirror.mirror.replicas import INTERNAL_PREFIX
from stablemirror.oci.errors import NameInvalid, Unauthorized
from stablemirror.oci.names import validate_name

REPLICA_SECRET = web.AppKey("replica_secret", str)
_BLOB = re.compile(r"(?P<name>.+)/blobs/(?P<digest>[^/]+)", re.DOTALL)


async def replica_blob(request: web.Request) -> web.StreamResponse:
    request[ROUTE_KEY] = "replica_blob"
    header = request.headers.get("Authorization", "")
    if not replica_auth.verify(request.app[REPLICA_SECRET], request.method,
                               request.rel_url.raw_path, header, time.time()):
        raise Unauthorized(reason="replica signature missing or invalid")
    match = _BLOB.fullmatch(request.match_info["path"])
    if match is None:
        raise NameInvalid(path=request.match_info["path"])
    params = match.groupdict()
    request[PARAMS_KEY] = params
    validate_name(params["name"])
    request[CONTEXT_KEY] = dataclasses.replace(context(request), actor="replica",
                                               from_replica=True)
    return await blobs.get(request, **params)


def add_replica_routes(app: web.Application, secret: str) -> None:
    app[REPLICA_SECRET] = secret
    app.router.add_get(INTERNAL_PREFIX + "/v2/{path:[\\s\\S]+}", replica_blob)
