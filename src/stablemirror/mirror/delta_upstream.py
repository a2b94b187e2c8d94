"""What the mirror's delta path asks an upstream group: chunk-index referrers of a model
manifest, their manifests and index blobs (bounded, digest-checked), and exact byte ranges
of a layer (a 200 or a wrong Content-Range means no Range support)."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp

from stablemirror.delta.assemble import DeltaError
from stablemirror.delta.referrer import ARTIFACT_TYPE, MANIFEST_MEDIA_TYPE, referrer_digests
from stablemirror.metrics import DeltaFallback
from stablemirror.mirror.upstream import Upstream, UpstreamFailure, UpstreamGroup, with_ns
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.oci.manifest import Manifest, parse_manifest

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
LISTING_LIMIT = 4 << 20


class Fallback(Exception):
    """The delta path cannot go on: fetch the whole layer, counted under `reason`."""

    def __init__(self, reason: DeltaFallback) -> None:
        super().__init__(reason)
        self.reason: DeltaFallback = reason


class UpstreamReader:
    def __init__(self, group: UpstreamGroup, repository: str, via: str, ns: str = "") -> None:
        self.group = group
        self.repository = repository  # as named upstream
        self.via = via
        self.ns = ns

    def _path(self, u: Upstream, tail: str) -> str:
        return with_ns(f"/v2/{u.repository(self.repository)}/{tail}", self.ns)

    async def get(self, tail: str, limit: int, accept: str = "") -> bytes:
        async def call(u: Upstream) -> bytes:
            headers = {"Accept": accept} if accept else {}
            response = await u.request("GET", self._path(u, tail), headers, self.via)
            try:
                if response.status != 200:
                    raise Fallback("no_index")
                if (response.content_length or 0) > limit:
                    raise Fallback("bad_index")
                body = bytearray()  # read(n) returns what is buffered: read to the end
                async for piece in response.content.iter_chunked(1 << 16):
                    body += piece
                    if len(body) > limit:
                        raise Fallback("bad_index")
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                response.release()
            return bytes(body)
        return await self.group.attempt(call)

    async def referrers(self, manifest: str) -> list[Manifest]:
        """The chunk-index referrers of `manifest`, each checked against its digest."""
        listing = await self.get(f"referrers/{manifest}?artifactType={ARTIFACT_TYPE}",
                                 LISTING_LIMIT)
        found = []
        for ref in referrer_digests(listing):
            raw = await self.get(f"manifests/{ref}", LISTING_LIMIT, MANIFEST_MEDIA_TYPE)
            try:
                referrer = parse_manifest(raw, MANIFEST_MEDIA_TYPE)
            except OCIError:
                continue
            if str(referrer.digest) == ref:
                found.append(referrer)
        return found

    async def range(self, digest: Digest, start: int, end: int) -> bytes:
        async def call(u: Upstream) -> bytes:
            response = await u.request("GET", self._path(u, f"blobs/{digest}"),
                                       {"Range": f"bytes={start}-{end - 1}"}, self.via)
            try:
                if response.status != 206:
                    raise DeltaError("no_range")
                m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if m is None or (int(m.group(1)), int(m.group(2))) != (start, end - 1):
                    raise DeltaError("no_range")
                return await response.content.readexactly(end - start)
            except (TimeoutError, aiohttp.ClientError, OSError,
                    asyncio.IncompleteReadError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                with contextlib.suppress(Exception):
                    response.release()
        return await self.group.attempt(call)
