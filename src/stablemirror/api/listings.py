"""Tag lists, the catalog and the referrers API, with n/last pagination.

`n` is a count in ASCII digits (anything else: 400 PAGINATION_NUMBER_INVALID). A page holds
at most MAX_PAGE_SIZE entries: a larger `n`, up to any number of digits, is clamped to it,
which the spec allows because a page that is full carries a `Link` to the next one. Without
`n` the whole list is returned, as the spec says. `last` may be any string (index/sql.py)."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.errors import PaginationNumberInvalid

MAX_PAGE_SIZE = 1000


def page_size(request: web.Request) -> int | None:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes superscripts, etc.
        raise PaginationNumberInvalid(n=raw[:64])
    digits = raw.lstrip("0") or "0"
    # More digits than MAX_PAGE_SIZE has cannot be smaller; int() of them could be slow.
    if len(digits) > len(str(MAX_PAGE_SIZE)):
        return MAX_PAGE_SIZE
    return min(int(digits), MAX_PAGE_SIZE)


def _page(
    request: web.Request, key: str, doc: dict[str, object], items: list[str], n: int | None
) -> web.Response:
    response = web.json_response(doc)
    if n and len(items) == n:
        query = urlencode({"n": n, "last": items[-1]})
        response.headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return response


async def tags(request: web.Request, name: str) -> web.StreamResponse:
    n = page_size(request)
    found = await request.app[REGISTRY].list_tags(
        context(request), name, n, request.query.get("last")
    )
    return _page(request, "tags", {"name": name, "tags": found}, found, n)


async def catalog(request: web.Request) -> web.StreamResponse:
    n = page_size(request)
    found = await request.app[REGISTRY].catalog(context(request), n, request.query.get("last"))
    return _page(request, "repositories", {"repositories": found}, found, n)


async def referrers(request: web.Request, name: str, digest: str) -> web.StreamResponse:
    artifact_type = request.query.get("artifactType")
    body = await request.app[REGISTRY].referrers(context(request), name, digest, artifact_type)
    response = web.Response(body=body, headers={"Content-Type": mt.OCI_INDEX})
    if artifact_type is not None:
        response.headers["OCI-Filters-Applied"] = "artifactType"
    return response
