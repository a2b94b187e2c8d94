"""Online garbage collection, safe while the registry takes pushes.

A blob is collected only when (a) no manifest in any repository references it and
(b) nobody pushed, mounted or linked it since `now - grace`. The decision is taken
atomically in the index (`forget_blob_if_unreferenced`), and the file is then moved to
trash and the index asked again: an upload that raced us re-creates the row *before*
publishing its bytes (registry/hosted.py), so a row seen again means "restore".
Upload sessions are never touched until they are older than `upload_max_age`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stablemirror.index.protocol import RegistryIndex
from stablemirror.oci.digest import Digest
from stablemirror.store.fetch_files import FetchFiles
from stablemirror.store.protocol import BlobStore


@dataclass
class GcReport:
    blobs_deleted: int = 0
    bytes_freed: int = 0
    orphan_files_deleted: int = 0
    uploads_removed: int = 0
    partial_fetches_removed: int = 0
    restored: int = 0
    deleted: list[str] = field(default_factory=list)


class GarbageCollector:
    def __init__(
        self,
        store: BlobStore,
        index: RegistryIndex,
        grace_seconds: float,
        upload_max_age_seconds: float,
        fetch_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.grace = grace_seconds
        self.upload_max_age = upload_max_age_seconds
        self.fetch_dir = fetch_dir  # the mirror's in-flight transfers (store/fetch_files.py)

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
        return report

    async def _remove_file(self, digest: Digest, report: GcReport) -> bool:
        removed = await remove_blob_file(self.store, self.index, digest)
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


async def remove_blob_file(store: BlobStore, index: RegistryIndex, digest: Digest) -> bool:
    """Delete a blob file whose index rows were just dropped, unless a push raced us.

    Move it aside, then ask the index again: a concurrent upload records the blob before
    publishing its bytes, so a row seen now means the file must come back.
    """
    trashed = await store.trash(digest, uuid.uuid4().hex)
    if trashed is None:
        return True
    if await index.blob_known(str(digest)):
        await store.restore(digest, trashed)
        return False
    await store.drop_trashed(trashed)
    return True
