"""GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.body import read_manifest_body
from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY


async def get(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    found = await request.app[REGISTRY].get_manifest(context(request), name, reference)
    headers = {
        "Docker-Content-Digest": found.digest,
        "ETag": f'"{found.digest}"',
        "Content-Type": found.media_type,
    }
    if found.stale:  # a mirror answered from cache because no upstream could confirm
        headers["Warning"] = '110 stablemirror "Response is Stale"'
        headers["X-Stablemirror-Cache"] = "stale"
    if found.channel is not None:  # a release channel: this client's version (releases/)
        headers["Stablemirror-Channel"] = found.channel
        headers["Cache-Control"] = "no-cache"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(found.content))
        return web.Response(headers=headers)
    return web.Response(body=found.content, headers=headers)


async def put(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    body = await read_manifest_body(request)
    result = await request.app[REGISTRY].put_manifest(
        context(request),
        name,
        reference,
        body,
        request.headers.get("Content-Type", ""),
        request.query.getall("tag", []),
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{result.digest}",
        "Docker-Content-Digest": str(result.digest),
    }
    if result.subject is not None:
        headers["OCI-Subject"] = str(result.subject)
    return web.Response(status=201, headers=headers)


async def delete(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    await request.app[REGISTRY].delete_manifest(context(request), name, reference)
    return web.Response(status=202)
