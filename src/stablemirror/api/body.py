"""Request bodies: streamed in large chunks, never buffered whole (except manifests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from stablemirror.api.connections import body_chunks
from stablemirror.oci.errors import ManifestTooLarge, OCIError, SizeInvalid
from stablemirror.oci.manifest import MAX_MANIFEST_BYTES

CHUNK = 1 << 20


async def stream_body(request: web.Request) -> AsyncIterator[bytes]:
    """Yield the body in ~1 MiB pieces; fail if fewer bytes than Content-Length arrive."""
    expected = request.content_length
    received = 0
    buf = bytearray()
    async for data in body_chunks(request):
        buf += data
        received += len(data)
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)
    if expected is not None and received != expected:
        raise SizeInvalid(expected=expected, received=received)


def has_body(request: web.Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return request.headers.get("Transfer-Encoding", "").lower() == "chunked"


async def read_manifest_body(request: web.Request) -> bytes:
    if (request.content_length or 0) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(size=request.content_length, limit=MAX_MANIFEST_BYTES)
    buf = bytearray()
    async for data in body_chunks(request):
        buf += data
        if len(buf) > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(size=f">{MAX_MANIFEST_BYTES}", limit=MAX_MANIFEST_BYTES)
    return bytes(buf)


async def json_object_body(request: web.Request, invalid: type[OCIError]) -> dict[str, Any]:
    """The request body as a JSON object (admin and release APIs); `invalid` names the
    API's own error when it is not one."""
    try:
        doc = await request.json()
    except ValueError:
        raise invalid(field="body", reason="not JSON") from None
    if not isinstance(doc, dict):
        raise invalid(field="body", reason="a JSON object is expected")
    return doc
