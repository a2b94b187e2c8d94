"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: zero-copy from local disk, Range aware."""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.api.ranges import stream_blob


async def get(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    source = await request.app[REGISTRY].open_blob(context(request), name, digest)
    headers = {
        "Docker-Content-Digest": str(source.digest),
        "ETag": f'"{source.digest}"',
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(source.size)
        return web.Response(headers=headers)
    if source.path is not None:
        # sendfile(2); aiohttp answers Range with 206 / 416 itself.
        return web.FileResponse(source.path, headers=headers)
    return await stream_blob(request, source, headers)


async def delete(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    await request.app[REGISTRY].delete_blob(context(request), name, digest)
    return web.Response(status=202)
