"""A fetch leader's source for weight layers: the new layer assembled from chunks the mirror
already holds plus coalesced, parallel Range GETs upstream (docs/delta.md).

It is a `BlobUpstream` like GroupBlobSource, so the leader writes, hashes and verifies what
it yields into the same `.part`, in offset order, and followers stream it as they do any
fetch; a leader that resumes a `.part` asks `open(offset)` and the delta goes on from there.
Every chunk is checked against the index before it is yielded, and the layer's SHA-256 by
the leader. Whatever goes wrong on the delta path (no index, a bad or lying index, no shared
chunks, an upstream without Range, a digest mismatch at the end) turns the source into the
plain whole-blob source for the rest of this fetch, from the bytes already verified on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from stablemirror.delta.assemble import Assembly, DeltaError
from stablemirror.delta.chunker import index_file
from stablemirror.delta.format import ChunkIndex, IndexRejected, decode, max_index_size
from stablemirror.delta.plan import LocalChunk, plan
from stablemirror.delta.referrer import (
    ARTIFACT_TYPE,
    MANIFEST_MEDIA_TYPE,
    index_blob_for,
    referrer_digests,
)
from stablemirror.delta.store import ChunkTable, LayerOrigin
from stablemirror.index.protocol import RegistryIndex
from stablemirror.metrics import DeltaFallback, Metrics
from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import (
    NoUpstreamAvailable,
    Upstream,
    UpstreamAnswer,
    UpstreamFailure,
    with_ns,
)
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.oci.manifest import Manifest, parse_manifest
from stablemirror.store.filesystem import FilesystemBlobStore

log = logging.getLogger("stablemirror.delta")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
MIN_SHARED = 0.05  # below 5% of the layer local, a delta saves less than its requests cost


class Fallback(Exception):
    def __init__(self, reason: DeltaFallback) -> None:
        super().__init__(reason)
        self.reason: DeltaFallback = reason


class MirrorDelta:
    """What every delta source of one mirror shares: the chunk table, the store, metrics."""

    def __init__(self, chunks: ChunkTable, store: FilesystemBlobStore, metrics: Metrics,
                 index: RegistryIndex, parallel: int = 4) -> None:
        self.chunks = chunks
        self.index = index  # upstream chunk-index referrers are cached here, for tiers below
        self.store = store
        self.metrics = metrics
        self.parallel = parallel
        self._tasks: set[asyncio.Task[None]] = set()

    def source(self, plain: GroupBlobSource, origin: LayerOrigin, upstream_repository: str
               ) -> DeltaBlobSource:
        return DeltaBlobSource(self, plain, origin, upstream_repository)

    def published(self, digest: Digest, source: object) -> None:
        """A fetched blob was published: make its chunks reusable (off the request path)."""
        verified = source.verified_index if isinstance(source, DeltaBlobSource) else None
        if not isinstance(source, DeltaBlobSource):
            return  # only weight layers (the sources made for them) are indexed
        task = asyncio.get_running_loop().create_task(self._index(digest, verified))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _index(self, digest: Digest, verified: ChunkIndex | None) -> None:
        try:
            if await self.chunks.is_indexed(str(digest)):
                return
            if verified is None:  # fetched whole: cut it once from the page cache
                path = self.store.local_path(digest)
                if path is None:
                    return
                verified = await asyncio.to_thread(index_file, path, digest.hex)
            await self.chunks.record(str(digest), verified)
        except Exception:
            log.exception("indexing %s for delta transfer failed", digest)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def local_table(self, index: ChunkIndex, exclude: str) -> dict[bytes, LocalChunk]:
        hashes = [index.hash_at(i) for i in range(len(index))]
        found = await self.chunks.lookup(hashes, index.params.key, exclude)
        paths: dict[str, Path | None] = {}
        table: dict[bytes, LocalChunk] = {}
        for h, (digest, offset) in found.items():
            if digest not in paths:
                p = self.store.local_path(Digest.parse(digest))
                paths[digest] = p if p is not None and p.exists() else None
            path = paths[digest]
            if path is not None:
                table[h] = LocalChunk(path, offset)
        return table


class DeltaBlobSource:
    def __init__(self, delta: MirrorDelta, plain: GroupBlobSource, origin: LayerOrigin,
                 upstream_repository: str) -> None:
        self.delta = delta
        self.plain = plain
        self.origin = origin
        self.upstream_repository = upstream_repository
        self.digest = plain.digest
        self._off = False
        self._assembly: Assembly | None = None
        self.verified_index: ChunkIndex | None = None  # set once a delta fetch completed

    @property
    def max_attempts(self) -> int:
        return self.plain.max_attempts + 2  # room for the switch to the plain source

    def retry_plain(self) -> bool:
        """The assembled layer did not hash right: once, fetch it whole (fetch.py)."""
        if self._off or self._assembly is None:
            return False
        self._fall_back("digest_mismatch")
        return True

    def _fall_back(self, reason: DeltaFallback) -> None:
        log.info("delta fetch of %s falls back to the whole blob: %s", self.digest, reason)
        self.delta.metrics.delta_fallback(reason)
        self._off = True

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        if not self._off:
            try:
                if self._assembly is None:
                    self._assembly = await self._prepare()
                return self._assembly.index.size, self._run(self._assembly, offset)
            except Fallback as e:
                self._fall_back(e.reason)
            except (UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
                self._fall_back("no_index" if isinstance(e, UpstreamAnswer) else "error")
            except Exception:
                log.exception("delta preparation of %s failed", self.digest)
                self._fall_back("error")
        return await self.plain.open(offset)

    async def _run(self, assembly: Assembly, offset: int) -> AsyncIterator[bytes]:
        try:
            async for data in assembly.run(offset):
                yield data
        except DeltaError as e:
            self._fall_back(e.reason if e.reason in ("no_range", "index_mismatch")
                            else "error")  # type: ignore[arg-type]
            raise UpstreamFailure("delta", e.reason) from e
        except (TimeoutError, aiohttp.ClientError, OSError, NoUpstreamAvailable) as e:
            # a broken transfer: the leader resumes from what it has, still by delta
            raise UpstreamFailure("delta", type(e).__name__) from e
        if offset == 0:
            self.verified_index = assembly.index  # every chunk checked; the leader checks all
        saved = assembly.local_bytes
        self.delta.metrics.delta_done(assembly.chunks_reused, assembly.chunks_fetched, saved)

    # -- finding the index upstream ---------------------------------------------------------
    async def _prepare(self) -> Assembly:
        index = await self._fetch_index()
        local = await self.delta.local_table(index, str(self.digest))
        p = plan(index, local)
        if p.local_bytes < MIN_SHARED * index.size:
            raise Fallback("no_shared_chunks")
        log.info("delta fetch of %s: %d of %d bytes local, %d ranges", self.digest,
                 p.local_bytes, index.size, len(p.ranges))
        return Assembly(index, p, self._fetch_range, self.delta.parallel)

    def _path(self, u: Upstream, tail: str) -> str:
        return with_ns(f"/v2/{u.repository(self.upstream_repository)}/{tail}", self.plain.ns)

    async def _get(self, tail: str, limit: int, accept: str = "") -> bytes:
        async def call(u: Upstream) -> bytes:
            headers = {"Accept": accept} if accept else {}
            response = await u.request("GET", self._path(u, tail), headers, self.plain.via)
            try:
                if response.status != 200:
                    raise Fallback("no_index")
                if (response.content_length or 0) > limit:
                    raise Fallback("bad_index")
                body = await response.content.read(limit + 1)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                response.release()
            if len(body) > limit:
                raise Fallback("bad_index")
            return body
        return await self.plain.group.attempt(call)

    async def _fetch_index(self) -> ChunkIndex:
        manifest = self.origin.manifest
        listing = await self._get(f"referrers/{manifest}?artifactType={ARTIFACT_TYPE}",
                                  4 << 20)
        for ref in referrer_digests(listing):
            raw = await self._get(f"manifests/{ref}", 4 << 20, MANIFEST_MEDIA_TYPE)
            try:
                referrer = parse_manifest(raw, MANIFEST_MEDIA_TYPE)
            except OCIError:
                continue
            if str(referrer.digest) != ref:
                continue
            d = index_blob_for(referrer, self.digest)
            if d is None:
                continue
            await self._cache_referrer(referrer)
            if d.size > max_index_size(self.origin.size):
                raise Fallback("bad_index")
            blob = await self._get(f"blobs/{d.digest}", d.size)
            if Digest.of(blob) != d.digest:
                raise Fallback("bad_index")
            try:
                return decode(blob, self.digest.hex, self.origin.size)
            except IndexRejected as e:
                log.warning("chunk index of %s refused: %s", self.digest, e)
                raise Fallback("bad_index") from e
        raise Fallback("no_index")

    async def _cache_referrer(self, referrer: Manifest) -> None:
        """Keep the referrer, so a tier below finds it in our referrers API (its blobs
        are pulled through like any other when asked for)."""
        try:
            await self.delta.index.put_manifest(self.origin.repository, referrer, [],
                                                check_references=False)
        except Exception:
            log.warning("could not cache the chunk-index referrer %s", referrer.digest)

    async def _fetch_range(self, start: int, end: int) -> bytes:
        async def call(u: Upstream) -> bytes:
            path = self._path(u, f"blobs/{self.digest}")
            response = await u.request("GET", path, {"Range": f"bytes={start}-{end - 1}"},
                                       self.plain.via)
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
        return await self.plain.group.attempt(call)
