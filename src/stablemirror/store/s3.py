"""S3 blob store: blobs as objects, one per digest, behind the same BlobStore protocol.

Layout under `storage.s3.prefix` in the bucket:
    blobs/<algorithm>/<hex>               committed, verified blobs (one object per digest)
    uploads/<upload id>/...               upload sessions (store/s3_uploads.py)
    trash/<alg>-<hex>-<token>             blobs GC is about to remove (registry/gc.py)
    quarantine/<alg>-<hex>-<token>        blobs that failed verification (integrity/scrub.py)
An object appears under blobs/ only by a server-side copy of bytes whose digest was checked
(a push) or by an upload of a local file the caller verified (the mirror, publish_verified):
a PUT or a multipart completion is atomic in S3, so `stat` and `read` never see partial or
unverified bytes. docs/storage.md has the semantics and the decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from stablemirror.metrics import Metrics
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, DigestInvalid
from stablemirror.store.config import S3Settings
from stablemirror.store.s3_client import S3Connection, S3Missing
from stablemirror.store.s3_uploads import MiB, S3Uploads

READ_PIECE = 1 << 20


class S3BlobStore:
    def __init__(self, settings: S3Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.s3 = S3Connection(settings, metrics)
        self.prefix = settings.prefix
        self.part_size = settings.part_size_mib * MiB
        self.uploads = S3Uploads(self.s3, self.prefix, self.part_size)

    async def aclose(self) -> None:
        await self.s3.aclose()

    async def probe(self) -> None:
        """The bucket answers (readiness); StorageUnavailable or S3Missing if not."""
        await self.s3.call("head_bucket", "head_bucket")

    # -- committed blobs -----------------------------------------------------------------
    def blob_key(self, digest: Digest) -> str:
        return f"{self.prefix}blobs/{digest.algorithm}/{digest.hex}"

    async def stat(self, digest: Digest) -> int | None:
        head = await self.s3.head(self.blob_key(digest))
        return None if head is None else int(head["ContentLength"])

    def local_path(self, digest: Digest) -> Path | None:
        return None  # nothing local: blobs are streamed (api/ranges.py) or redirected

    async def redirect_url(self, digest: Digest) -> str | None:
        if not self.settings.redirect:
            return None
        return await self.s3.presign_get(self.blob_key(digest),
                                         self.settings.redirect_expiry_seconds)

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if length == 0:
            if await self.stat(digest) is None:
                raise BlobUnknown(digest=str(digest))
            return
        try:
            stream = self.s3.stream(self.blob_key(digest), offset, length, piece=READ_PIECE)
            async for data in stream:
                yield data
        except S3Missing as e:
            raise BlobUnknown(digest=str(digest)) from e

    async def delete(self, digest: Digest) -> bool:
        if await self.stat(digest) is None:
            return False
        await self.s3.delete(self.blob_key(digest))
        return True

    async def list_blobs(self) -> AsyncIterator[tuple[Digest, float]]:
        root = f"{self.prefix}blobs/"
        async for item in self.s3.list(root):
            algorithm, _, hex_ = str(item["Key"])[len(root):].partition("/")
            try:
                digest = Digest.parse(f"{algorithm}:{hex_}")
            except DigestInvalid:
                continue
            yield digest, item["LastModified"].timestamp()

    # -- GC and integrity: copy aside, then delete (S3 has no rename) ----------------------
    async def _move_aside(self, digest: Digest, where: str, token: str) -> str | None:
        size = await self.stat(digest)
        if size is None:
            return None
        target = f"{self.prefix}{where}/{digest.algorithm}-{digest.hex}-{token}"
        try:
            await self.s3.copy(self.blob_key(digest), target, size)
        except S3Missing:
            return None
        await self.s3.delete(self.blob_key(digest))
        return target

    async def trash(self, digest: Digest, token: str) -> str | None:
        return await self._move_aside(digest, "trash", token)

    async def restore(self, digest: Digest, trashed: str) -> None:
        if await self.stat(digest) is None:
            head = await self.s3.head(trashed)
            if head is not None:
                await self.s3.copy(trashed, self.blob_key(digest), int(head["ContentLength"]))
        await self.s3.delete(trashed)

    async def drop_trashed(self, trashed: str) -> None:
        await self.s3.delete(trashed)

    async def quarantine(self, digest: Digest, token: str) -> str | None:
        moved = await self._move_aside(digest, "quarantine", token)
        return None if moved is None else f"s3://{self.s3.bucket}/{moved}"

    # -- uploads ------------------------------------------------------------------------
    async def upload_create(self, upload_id: str) -> None:
        await self.uploads.create(upload_id)

    async def upload_size(self, upload_id: str) -> int:
        return await self.uploads.size(upload_id)

    async def upload_append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        return await self.uploads.append(upload_id, offset, chunks)

    async def upload_verify(self, upload_id: str, digest: Digest) -> int:
        return await self.uploads.verify(upload_id, digest)

    async def upload_publish(self, upload_id: str, digest: Digest) -> None:
        state = await self.uploads.verified(upload_id, digest)
        if await self.stat(digest) is None:  # an existing copy wins (same bytes)
            await self.s3.copy(self.uploads.key(upload_id, "data"), self.blob_key(digest),
                               state.size, if_match=state.assembled)
        await self.uploads.abort(upload_id)

    async def upload_abort(self, upload_id: str) -> None:
        await self.uploads.abort(upload_id)

    async def list_uploads(self) -> AsyncIterator[tuple[str, float]]:
        for item in await self.uploads.listing():
            yield item

    async def publish_verified(self, path: Path, digest: Digest) -> None:
        """Upload a local file the caller verified straight to its blob key (a PUT, or a
        multipart upload completed after its last part: either is atomic), then remove it."""
        key = self.blob_key(digest)
        if await self.stat(digest) is None:
            f = await asyncio.to_thread(open, path, "rb")
            try:
                await self._upload_file(f, key)
            finally:
                f.close()
        await asyncio.to_thread(path.unlink, True)

    async def _upload_file(self, f: BinaryIO, key: str) -> None:
        size = os.fstat(f.fileno()).st_size
        if size <= self.part_size:
            await self.s3.put(key, await asyncio.to_thread(f.read))
            return
        r = await self.s3.call("create_multipart", "create_multipart_upload", Key=key)
        upload_id = r["UploadId"]
        parts = []
        try:
            number = 0
            while data := await asyncio.to_thread(f.read, self.part_size):
                number += 1
                p = await self.s3.call("upload_part", "upload_part", Key=key,
                                       UploadId=upload_id, PartNumber=number, Body=data)
                parts.append({"PartNumber": number, "ETag": p["ETag"]})
            await self.s3.call("complete_multipart", "complete_multipart_upload", Key=key,
                               UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                await self.s3.call("abort_multipart", "abort_multipart_upload", Key=key,
                                   UploadId=upload_id)
            raise
