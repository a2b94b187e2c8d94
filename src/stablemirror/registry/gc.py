"""Online garbage collection, safe while the registry takes pushes.

A blob is collected only when (a) no manifest in any repository references it and
(b) nobody pushed, mounted or linked it since `now - grace`. The decision is taken
atomically in the index (`forget_blob_if_unreferenced`), and the file is then moved to
trash and the index asked again: an upload that raced us re-creates the row *before*
publishing its bytes (registry/hosted.py), so a row seen again means "restore".
Upload sessions are never touched until they are older than `upload_max_age`.

A removed blob's delta chunk rows (delta/) go with it, and each run sweeps the rows of any
blob no longer stored (evicted, quarantined, or removed before this was done). A stale row
is worse than dead weight: the table answers one blob per chunk hash, so a row naming a
file that is gone can hide a stored blob holding the same chunk, and a delta pull then
fetches that chunk again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stablemirror.index.protocol import RegistryIndex
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import DigestInvalid
from stablemirror.store.fetch_files import FetchFiles
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.gc")


class ChunkRows(Protocol):
    """The delta chunk table as collection sees it (delta/chunk_rows.py implements it)."""

    async def indexed_digests(self) -> list[str]: ...
    async def forget(self, digest: str) -> None: ...


@dataclass
class GcReport:
    blobs_deleted: int = 0
    bytes_freed: int = 0
    orphan_files_deleted: int = 0
    uploads_removed: int = 0
    partial_fetches_removed: int = 0
    restored: int = 0
    chunk_rows_swept: int = 0  # blobs whose chunk rows went because the blob is not stored
    deleted: list[str] = field(default_factory=list)


class GarbageCollector:
    def __init__(
        self,
        store: BlobStore,
        index: RegistryIndex,
        grace_seconds: float,
        upload_max_age_seconds: float,
        fetch_dir: Path | None = None,
        chunks: ChunkRows | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.grace = grace_seconds
        self.upload_max_age = upload_max_age_seconds
        self.fetch_dir = fetch_dir  # the mirror's in-flight transfers (store/fetch_files.py)
        self.chunks = chunks

    async def run(self, dry_run: bool = False) -> GcReport:
        report = GcReport()
        now = time.time()
        await self._stale_uploads(now - self.upload_max_age, dry_run, report)
        if self.fetch_dir is not None:
            report.partial_fetches_removed += FetchFiles(self.fetch_dir).sweep(
                now - self.upload_max_age, dry_run)
        cutoff = now - self.grace
        for digest, size in await self.index.unreferenced_blobs(cutoff):
            if dry_run:
                report.blobs_deleted += 1
                report.bytes_freed += size
                report.deleted.append(digest)
                continue
            if await self.index.forget_blob_if_unreferenced(
                digest, cutoff
            ) and await self._remove_file(Digest.parse(digest), report):
                report.blobs_deleted += 1
                report.bytes_freed += size
                report.deleted.append(digest)
        # Files with no index row: left by a crash between publish and index, or by hand.
        async for d, mtime in self.store.list_blobs():
            if mtime < cutoff and not await self.index.blob_known(str(d)):
                size = await self.store.stat(d) or 0
                if dry_run or await self._remove_file(d, report):
                    report.orphan_files_deleted += 1
                    report.bytes_freed += size
        if self.chunks is not None:
            report.chunk_rows_swept = await sweep_chunk_rows(self.chunks, self.store, dry_run)
        return report

    async def _remove_file(self, digest: Digest, report: GcReport) -> bool:
        removed = await remove_blob_file(self.store, self.index, digest, self.chunks)
        if not removed:
            report.restored += 1
        return removed

    async def _stale_uploads(self, cutoff: float, dry_run: bool, report: GcReport) -> None:
        stale = set(await self.index.uploads_older_than(cutoff))
        async for upload_id, mtime in self.store.list_uploads():
            if mtime < cutoff:
                stale.add(upload_id)
        for upload_id in stale:
            report.uploads_removed += 1
            if not dry_run:
                await self.store.upload_abort(upload_id)
                await self.index.delete_upload(upload_id)


async def remove_blob_file(store: BlobStore, index: RegistryIndex, digest: Digest,
                           chunks: ChunkRows | None = None) -> bool:
    """Delete a blob file whose index rows were just dropped, unless a push raced us;
    its chunk rows go too.

    Move it aside, then ask the index again: a concurrent upload records the blob before
    publishing its bytes, so a row seen now means the file must come back.
    """
    trashed = await store.trash(digest, uuid.uuid4().hex)
    if trashed is not None:
        if await index.blob_known(str(digest)):
            await store.restore(digest, trashed)
            return False
        await store.drop_trashed(trashed)
    if chunks is not None:
        await _forget_chunks(chunks, str(digest))
    return True


async def sweep_chunk_rows(chunks: ChunkRows, store: BlobStore, dry_run: bool = False) -> int:
    """Forget the chunk rows of every blob the store does not hold; how many blobs. Rows
    are recorded only after a blob is published (mirror/delta_source.py), so a blob with
    rows and no file is gone, not on its way."""
    swept = 0
    for digest in await chunks.indexed_digests():
        try:
            parsed = Digest.parse(digest)
        except DigestInvalid:  # not one the store could hold
            parsed = None
        if parsed is not None and await store.stat(parsed) is not None:
            continue
        swept += 1
        if not dry_run:
            await _forget_chunks(chunks, digest)
    return swept


async def _forget_chunks(chunks: ChunkRows, digest: str) -> None:
    try:
        await chunks.forget(digest)
    except Exception:  # the blob is gone either way; the next sweep tries again
        log.exception("forgetting the chunk rows of %s failed", digest)
