"""Chunk indexes for what is pushed: a wrapper of the registry service that, when a manifest
with weight layers is pushed and no chunk-index referrer of it exists yet, indexes its
layers once in the background (never on the request path) and pushes the index blobs and
the referrer manifest into the same repository of the hosted registry, so they show in the
referrers API and travel with the model (docs/delta.md).

One job at a time per worker: indexing is CPU work (~0.55 s per GB, docs/delta.md) that
must not crowd out serving. A job lost to a restart is redone by the next push of the
manifest (or `index_manifest` from a command).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from stablemirror.delta.chunker import index_file
from stablemirror.delta.format import ChunkIndex
from stablemirror.delta.referrer import (
    ARTIFACT_TYPE,
    MANIFEST_MEDIA_TYPE,
    build_referrer,
    weight_layers,
)
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.oci.manifest import parse_manifest
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import PutManifestResult, RegistryService, RequestContext
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.delta")
INDEX_CTX = RequestContext(actor="system:delta", client="local",
                           user_agent="stablemirror-delta")


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class PushIndexer:
    def __init__(self, hosted: RegistryService, store: BlobStore) -> None:
        self.hosted = hosted  # where referrers are read and pushed
        self.store = store
        self._slots = asyncio.Semaphore(1)
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def wrap(self, inner: RegistryService) -> RegistryService:
        return IndexingRegistry(inner, self)

    def submit(self, repository: str, digest: str) -> asyncio.Task[None]:
        key = (repository, digest)
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.index_manifest(repository,
                                                                              digest))
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._tasks.pop(key, None)
                                   if self._tasks.get(key) is t else None)
        return task

    async def stop(self, *_args: object) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def has_index(self, repository: str, digest: str) -> bool:
        body = await self.hosted.referrers(INDEX_CTX, repository, digest, ARTIFACT_TYPE)
        doc = json.loads(body)
        return any(m.get("artifactType") == ARTIFACT_TYPE for m in doc.get("manifests", []))

    async def index_manifest(self, repository: str, digest: str) -> None:
        try:
            async with self._slots:
                await self._index(repository, digest)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chunk indexing of %s@%s failed", repository, digest)

    async def _index(self, repository: str, digest: str) -> None:
        stored = await self.hosted.get_manifest(INDEX_CTX, repository, digest)
        try:
            manifest = parse_manifest(stored.content, stored.media_type)
        except OCIError:
            return
        layers = weight_layers(manifest)
        if not layers or await self.has_index(repository, digest):
            return
        indexes: list[ChunkIndex] = []
        for d in layers:
            path = self.store.local_path(d.digest)
            if path is None or not path.exists():
                return  # not all here (a mounted or foreign layer): nothing to index from
            indexes.append(await asyncio.to_thread(index_file, path, d.digest.hex))
        ref = build_referrer(digest, stored.media_type, len(stored.content), indexes)
        for blob_digest, content in ref.blobs:
            await self.hosted.upload_monolithic(INDEX_CTX, repository, str(blob_digest),
                                                _one(content))
        await self.hosted.put_manifest(INDEX_CTX, repository, str(ref.digest), ref.manifest,
                                       MANIFEST_MEDIA_TYPE, [])
        log.info("chunk index of %s@%s: %d layers, %d chunks", repository, digest,
                 len(indexes), sum(len(i) for i in indexes))


class IndexingRegistry(ForwardingRegistry):
    def __init__(self, inner: RegistryService, indexer: PushIndexer) -> None:
        super().__init__(inner)
        self.indexer = indexer

    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        result = await self.inner.put_manifest(ctx, repository, reference, body,
                                               content_type, extra_tags)
        if _has_weights(body, content_type, result.digest):
            self.indexer.submit(repository, str(result.digest))
        return result


def _has_weights(body: bytes, content_type: str, digest: Digest) -> bool:
    try:
        return bool(weight_layers(parse_manifest(body, content_type, digest.algorithm)))
    except OCIError:
        return False
