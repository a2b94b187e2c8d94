"""Tag lists, the catalog and the referrers API, with n/last pagination."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from stablemirror.api.body import query_int
from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.oci import mediatypes as mt


def _page(
    request: web.Request, key: str, doc: dict[str, object], items: list[str], n: int | None
) -> web.Response:
    response = web.json_response(doc)
    if n and len(items) == n:
        query = urlencode({"n": n, "last": items[-1]})
        response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return response


async def tags(request: web.Request, name: str) -> web.StreamResponse:
    n = query_int(request, "n")
    found = await request.app[REGISTRY].list_tags(
        context(request), name, n, request.query.get("last")
    )
    return _page(request, "tags", {"name": name, "tags": found}, found, n)


async def catalog(request: web.Request) -> web.StreamResponse:
    n = query_int(request, "n")
    found = await request.app[REGISTRY].catalog(context(request), n, request.query.get("last"))
    return _page(request, "repositories", {"repositories": found}, found, n)


async def referrers(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    artifact_type = request.query.get("artifactType")
    body = await request.app[REGISTRY].referrers(context(request), name, digest, artifact_type)
    response = web.Response(body=body, headers={"Content-Type": mt.OCI_INDEX})
    if artifact_type is not None:
        response.headers["OCI-Filters-Applied"] = "artifactType"
    return response
