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
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from stablemirror.delta.assemble import Assembly, DeltaError
from stablemirror.delta.chunk_rows import ChunkStore, LayerOrigin
from stablemirror.delta.chunker import index_file
from stablemirror.delta.format import ChunkIndex, IndexRejected, decode, max_index_size
from stablemirror.delta.plan import LocalChunk, plan
from stablemirror.delta.referrer import index_blob_for
from stablemirror.index.protocol import RegistryIndex
from stablemirror.metrics import DeltaFallback, Metrics
from stablemirror.mirror.delta_upstream import Fallback, UpstreamReader
from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import NoUpstreamAvailable, UpstreamAnswer, UpstreamFailure
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Manifest
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.delta")
MIN_SHARED = 0.05  # below 5% of the layer local, a delta saves less than its requests cost


class MirrorDelta:
    """What every delta source of one mirror shares: the chunk table, the store, metrics."""

    def __init__(self, chunks: ChunkStore, store: BlobStore, metrics: Metrics,
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

    async def cache_referrers(self, up: UpstreamReader, repository: str, manifest: str
                              ) -> None:
        """Keep the upstream's chunk-index referrers of a model manifest that just passed
        through, so a tier below finds them in our referrers API before its first miss."""
        try:
            for referrer in await up.referrers(manifest):
                await self.index.put_manifest(repository, referrer, [],
                                              check_references=False)
        except (Fallback, UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
            log.info("no chunk-index referrers of %s upstream: %s", manifest,
                     getattr(e, "reason", type(e).__name__))

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
        self.up = UpstreamReader(plain.group, upstream_repository, plain.via, plain.ns)
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

    async def _fetch_index(self) -> ChunkIndex:
        for referrer in await self.up.referrers(self.origin.manifest):
            d = index_blob_for(referrer, self.digest)
            if d is None:
                continue
            await self._cache_referrer(referrer)
            if d.size > max_index_size(self.origin.size):
                raise Fallback("bad_index")
            blob = await self.up.get(f"blobs/{d.digest}", d.size)
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
        return await self.up.range(self.digest, start, end)
