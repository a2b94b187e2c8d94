"""Client side of delta transfer: fetch a new weight layer into a file, reusing the chunks
of local files (an earlier version's directory: `unpack --from OLD_DIR`, `pull`), and the
referrer `pack` attaches (`referrer_for_files`).

`DeltaLayerFetcher.fetch(repo, descriptor, dest)` has the shape of the unpack command's
layer-fetcher seam. It writes `dest` + ".part" in offset order, hashes as it goes and renames
only after the layer's SHA-256 matched; an interrupted fetch resumes from the part's
length. Any trouble on the delta path (no index, no shared chunks, no Range support, a
chunk or the layer not hashing right) ends in a whole-layer download instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from stablemirror.client.registry import RegistryClient
from stablemirror.delta.assemble import Assembly, DeltaError
from stablemirror.delta.chunker import index_file
from stablemirror.delta.format import (
    ChunkIndex,
    ChunkParams,
    IndexRejected,
    decode,
    max_index_size,
)
from stablemirror.delta.plan import LocalChunk, Plan, plan
from stablemirror.delta.referrer import (
    ARTIFACT_TYPE,
    MANIFEST_MEDIA_TYPE,
    IndexReferrer,
    build_referrer,
    index_blob_for,
    referrer_digests,
)
from stablemirror.metrics import DeltaFallback, Metrics
from stablemirror.oci.digest import Hasher
from stablemirror.oci.errors import OCIError
from stablemirror.oci.manifest import Descriptor, Manifest, parse_manifest

log = logging.getLogger("stablemirror.delta")
MIN_SHARED = 0.05


def referrer_for_files(subject_digest: str, subject_media_type: str, subject_size: int,
                       layers: Sequence[tuple[Descriptor, Path]]) -> IndexReferrer:
    """The chunk-index referrer for packed layers (blocking: run it in a thread). `pack`
    attaches it; its index computation reads each file once more, from the page cache."""
    indexes = [index_file(path, d.digest.hex) for d, path in layers]
    return build_referrer(subject_digest, subject_media_type, subject_size, indexes)


class DeltaLayerFetcher:
    def __init__(self, client: RegistryClient, manifest_digest: str,
                 local_files: Sequence[Path], metrics: Metrics | None = None,
                 parallel: int = 4) -> None:
        self.client = client
        self.manifest_digest = manifest_digest  # the model manifest the layers belong to
        self.local_files = [p for p in local_files if p.is_file()]
        self.metrics = metrics
        self.parallel = parallel
        self._tables: dict[str, dict[bytes, LocalChunk]] = {}  # by chunking params
        self.saved_bytes = 0
        self.fetched_bytes = 0
        self.fallbacks: list[str] = []
        self._referrer_cache: list[Manifest] | None = None

    async def fetch(self, repo: str, descriptor: Descriptor, dest: Path) -> None:
        part = dest.with_name(dest.name + ".part")
        try:
            index = await self._index(repo, descriptor)
            table = await self._local_table(index.params)
            p = plan(index, table)
            if p.local_bytes < MIN_SHARED * index.size:
                raise _Fallback("no_shared_chunks")
            await self._assemble(repo, descriptor, index, p, part)
        except _Fallback as e:
            self._fell_back(e.reason)
            await self._whole(repo, descriptor, part)
        os.replace(part, dest)

    def _fell_back(self, reason: DeltaFallback) -> None:
        self.fallbacks.append(reason)
        if self.metrics is not None:
            self.metrics.delta_fallback(reason)

    async def _index(self, repo: str, d: Descriptor) -> ChunkIndex:
        try:
            for referrer in await self._referrers(repo):
                blob = index_blob_for(referrer, d.digest)
                if blob is None:
                    continue
                if blob.size > max_index_size(d.size):
                    raise _Fallback("bad_index")
                data = await self.client.get_blob(repo, blob.digest, blob.size)
                return decode(data, d.digest.hex, d.size)
        except IndexRejected as e:
            raise _Fallback("bad_index") from e
        except OCIError as e:
            log.info("no chunk index for %s: %s", d.digest, e.code)
        raise _Fallback("no_index")

    async def _referrers(self, repo: str) -> list[Manifest]:
        """The model's chunk-index referrers, asked for once per fetcher."""
        if self._referrer_cache is None:
            listing = await self.client.referrers(repo, self.manifest_digest, ARTIFACT_TYPE)
            found = [await self.client.find_manifest(repo, ref, MANIFEST_MEDIA_TYPE)
                     for ref in referrer_digests(listing)]
            self._referrer_cache = [parse_manifest(f.content, f.media_type)
                                    for f in found if f is not None]
        return self._referrer_cache

    async def _local_table(self, params: ChunkParams) -> dict[bytes, LocalChunk]:
        table = self._tables.get(params.key)
        if table is None:
            table = {}
            for path in self.local_files:
                index = await asyncio.to_thread(index_file, path, "00" * 32, params)
                for c in index.chunks():
                    table.setdefault(c.hash, LocalChunk(path, c.offset))
            self._tables[params.key] = table
        return table

    async def _assemble(self, repo: str, d: Descriptor, index: ChunkIndex, p: Plan,
                        part: Path) -> None:
        async def fetch_range(start: int, end: int) -> bytes:
            data = await self.client.get_range(repo, d.digest, start, end)
            if data is None:
                raise DeltaError("no_range")
            return data

        assembly = Assembly(index, p, fetch_range, self.parallel)
        sha: Hasher = hashlib.sha256()
        with open(part, "ab+") as f:  # noqa: ASYNC230 - local file, written in pieces
            offset = f.seek(0, os.SEEK_END)
            if offset > d.size:
                f.truncate(0)
                offset = 0
            f.seek(0)
            await asyncio.to_thread(_hash_prefix, f, offset, sha)
            f.seek(offset)
            try:
                async for data in assembly.run(offset):
                    sha.update(data)
                    await asyncio.to_thread(f.write, data)
            except DeltaError as e:
                reason: DeltaFallback = "no_range" if e.reason == "no_range" \
                    else "index_mismatch"
                f.truncate(0)
                raise _Fallback(reason) from e
            if sha.hexdigest() != d.digest.hex:
                f.truncate(0)
                raise _Fallback("digest_mismatch")
        self.saved_bytes += assembly.local_bytes
        self.fetched_bytes += assembly.fetched_bytes
        if self.metrics is not None:
            self.metrics.delta_done(assembly.chunks_reused, assembly.chunks_fetched,
                                    assembly.local_bytes)

    async def _whole(self, repo: str, d: Descriptor, part: Path) -> None:
        with open(part, "wb") as f:  # noqa: ASYNC230 - truncates what a delta left
            await self.client.download_blob(repo, d.digest, f)
        self.fetched_bytes += d.size


class _Fallback(Exception):
    def __init__(self, reason: DeltaFallback) -> None:
        super().__init__(reason)
        self.reason: DeltaFallback = reason


def _hash_prefix(f: BinaryIO, length: int, sha: Hasher) -> None:
    remaining = length
    while remaining > 0 and (data := f.read(min(4 << 20, remaining))):
        sha.update(data)
        remaining -= len(data)

