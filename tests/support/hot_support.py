"""A cold tier for hot-tier tests: the filesystem store, counting what reaches it, and able
to be slow (so readers pile up on a promotion) or to hand out corrupt bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import cast

from stablemirror.oci.digest import Digest
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.hot_config import HotTierSettings
from stablemirror.store.protocol import BlobStore
from stablemirror.store.tiered import TieredBlobStore


class CountingStore(FilesystemBlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.stats = 0
        self.chunk_delay = 0.0
        self.corrupt = False

    async def stat(self, digest: Digest) -> int | None:
        self.stats += 1
        return await super().stat(digest)

    async def read(self, digest: Digest, offset: int = 0, length: int | None = None
                   ) -> AsyncIterator[bytes]:
        self.reads += 1
        async for chunk in super().read(digest, offset, length):
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield bytes(b ^ 1 for b in chunk[:1]) + chunk[1:] if self.corrupt else chunk


async def chunks(data: bytes) -> AsyncIterable[bytes]:
    yield data


async def put(store: BlobStore, data: bytes, upload_id: str) -> Digest:
    d = Digest.of(data)
    await store.upload_create(upload_id)
    await store.upload_append(upload_id, 0, chunks(data))
    await store.upload_verify(upload_id, d)
    await store.upload_publish(upload_id, d)
    return d


async def read_all(store: BlobStore, d: Digest, offset: int = 0,
                   length: int | None = None) -> bytes:
    return b"".join([c async for c in store.read(d, offset, length)])


def tiered(cold: BlobStore, hot: Path, **settings: object) -> TieredBlobStore:
    return TieredBlobStore(cold, hot, HotTierSettings.model_validate(settings))


def as_store(store: object) -> BlobStore:
    return cast(BlobStore, store)
