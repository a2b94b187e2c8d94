"""Blob bytes from an upstream group, resumable at any offset (the fetch leader's source)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp

from stablemirror.mirror.plain_http import PlainAnswer, SocketBody, is_plain, open_plain_blob
from stablemirror.mirror.upstream import Upstream, UpstreamFailure, UpstreamGroup, with_ns
from stablemirror.oci.digest import Digest

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class GroupBlobSource:
    def __init__(self, group: UpstreamGroup, repository: str, digest: Digest, via: str,
                 ns: str = "") -> None:
        self.group = group
        self.repository = repository
        self.digest = digest
        self.via = via
        self.ns = ns  # containerd's ?ns=, passed on (MirrorRegistry.upstream_reference)

    @property
    def max_attempts(self) -> int:
        return self.group.max_attempts

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        async def call(u: Upstream
                       ) -> tuple[Upstream, aiohttp.ClientResponse | SocketBody, int, int]:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            path = with_ns(f"/v2/{u.repository(self.repository)}/blobs/{self.digest}", self.ns)
            if is_plain(u):  # the body read off the socket by the .part writer (plain_http.py)
                plain = await open_plain_blob(u, path, headers, self.via)
                answer = None if plain is None else _plain_total(u, plain, offset)
                if answer is not None:
                    return answer
            response = await u.request("GET", path, headers, self.via)
            if response.status == 206:
                total = _range_total(response.headers.get("Content-Range", ""), offset)
                if total is None:
                    response.release()
                    raise UpstreamFailure(u.name, "bad_content_range")
                return u, response, total, 0
            if response.status == 200 and response.content_length is not None:
                # The upstream ignored Range: skip what we already have.
                return u, response, response.content_length, offset
            response.release()
            raise UpstreamFailure(u.name, f"http_{response.status}")

        upstream, response, total, skip = await self.group.attempt(call)
        if isinstance(response, SocketBody):
            response.broke = lambda reason: self.group.failed(upstream, reason)
            return total, response
        return total, self._chunks(upstream, response, skip)

    async def _chunks(self, upstream: Upstream, response: aiohttp.ClientResponse,
                      skip: int) -> AsyncIterator[bytes]:
        try:
            # iter_chunks hands over aiohttp's buffers as received; iter_any would join
            # them first, one more copy of every byte on the event loop's thread.
            async for data, _end_of_http_chunk in response.content.iter_chunks():
                if not data:
                    continue
                if skip:
                    cut = min(skip, len(data))
                    skip -= cut
                    data = data[cut:]
                    if not data:
                        continue
                yield data
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            self.group.failed(upstream, type(e).__name__)
            rest = _buffered(response.content)[skip:]
            if rest:  # received before the break: the caller keeps it and resumes after it
                yield rest
            raise UpstreamFailure(upstream.name, type(e).__name__) from e
        finally:
            response.release()


def _range_total(content_range: str, offset: int) -> int | None:
    """The blob's total size from a 206's Content-Range, if it starts at `offset`."""
    m = _CONTENT_RANGE.match(content_range)
    return int(m.group(3)) if m is not None and int(m.group(1)) == offset else None


def _plain_total(u: Upstream, plain: PlainAnswer, offset: int
                 ) -> tuple[Upstream, SocketBody, int, int] | None:
    """The blob's total size from a plain answer (the same checks as `call` above); None
    for a 200 to a Range request: the aiohttp path skips what the leader already has."""
    if plain.status == 206:
        total = _range_total(plain.content_range, offset)
        if total is None:
            plain.body.close()
            raise UpstreamFailure(u.name, "bad_content_range")
        return u, plain.body, total, 0
    if offset:
        plain.body.close()
        return None
    return u, plain.body, plain.body.length, 0


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """Bytes the HTTP client had received when the transfer broke.

    aiohttp's read methods raise the stored error before returning what is still buffered
    (up to twice `read_bufsize`), so without this a resume would fetch those bytes again.
    They are ordinary received bytes: the digest check covers them like any other."""
    read_buffered = getattr(content, "_read_nowait", None)
    if read_buffered is None:
        return b""
    try:
        return bytes(read_buffered(-1))
    except Exception:  # a fired timer or changed internals: resume from what we have
        return b""
