"""Serving a blob from a byte stream (non-local stores), with single-range support."""

from __future__ import annotations

import logging
import re

from aiohttp import web

from stablemirror.oci.errors import RangeInvalid
from stablemirror.registry.protocol import BlobSource

log = logging.getLogger("stablemirror.api")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, None for the whole blob."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeInvalid(range=header, size=size)
    if not m.group(1):  # suffix: last N bytes
        n = int(m.group(2))
        if n == 0:
            raise RangeInvalid(range=header, size=size)
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        err = RangeInvalid(range=header, size=size)
        err.headers["Content-Range"] = f"bytes */{size}"
        raise err
    return start, min(end, size - 1)


async def stream_blob(request: web.Request, source: BlobSource,
                      headers: dict[str, str]) -> web.StreamResponse:
    rng = parse_range(request.headers.get("Range"), source.size)
    start, end = rng if rng is not None else (0, source.size - 1)
    stream = aiter(source.open_stream(start, end - start + 1))
    # A remote store's first piece before the headers: one that cannot answer (S3 down,
    # the object gone) still gets a clean error response instead of a cut connection.
    first = await anext(stream, b"") if source.first_piece_before_headers else b""
    response = web.StreamResponse(status=206 if rng else 200, headers=headers)
    response.content_length = end - start + 1
    if rng:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{source.size}"
    await response.prepare(request)
    try:
        await response.write(first)
        async for chunk in stream:
            await response.write(chunk)
    except Exception as e:
        # Headers are gone; the only honest signal left is a broken connection, so the
        # client can never mistake a short or unverified body for a complete one.
        log.warning("aborting blob response %s: %r", source.digest, e)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"blob stream aborted: {e!r}") from e
    await response.write_eof()
    return response
