"""GET/HEAD/DELETE /v2/<name>/blobs/<digest>: zero-copy from local disk, Range aware."""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY, SENDFILE_POOL
from stablemirror.api.ranges import stream_blob
from stablemirror.api.sendfile import send_blob_file, send_regions

BLOB_SOURCE_KEY = "stablemirror.blob_source"  # where the bytes came from, for metrics


async def get(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    source = await request.app[REGISTRY].open_blob(context(request), name, digest)
    request[BLOB_SOURCE_KEY] = source.source
    headers = {
        "Docker-Content-Digest": str(source.digest),
        "ETag": f'"{source.digest}"',
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if request.method == "HEAD":
        headers["Content-Length"] = str(source.size)
        return web.Response(headers=headers)
    if source.redirect_url is not None:  # S3 with `redirect: true` (docs/storage.md)
        return web.Response(status=307, headers={**headers, "Location": source.redirect_url})
    if source.path is not None:
        return await send_blob_file(request, source.path, source.size, headers,
                                    request.app[SENDFILE_POOL])
    if source.regions is not None:
        return await send_regions(request, source.size, headers, request.app[SENDFILE_POOL],
                                  source.regions)
    return await stream_blob(request, source, headers)


async def delete(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    await request.app[REGISTRY].delete_blob(context(request), name, digest)
    return web.Response(status=202)
