"""A registry as either end of a copy, over client/ (token or Basic auth)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from stablemirror.client import listing
from stablemirror.client.registry import (
    ACCEPT_MANIFESTS,
    FetchedManifest,
    RegistryClient,
    _error,
    read_limited,
)
from stablemirror.client.uploads import cancel_upload, start_upload
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, Unavailable
from stablemirror.oci.manifest import MAX_MANIFEST_BYTES
from stablemirror.replication.blobs import BlobUpload
from stablemirror.replication.endpoint import (
    BlobOutcome,
    BlobReader,
    Progress,
    TransferSettings,
)
from stablemirror.replication.pacing import RateLimit


class RegistryBlobReader:
    def __init__(self, client: RegistryClient, repository: str, digest: Digest, size: int,
                 limit: RateLimit | None = None) -> None:
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = size
        self.limit = limit

    async def read_range(self, start: int, end: int) -> bytes | None:
        if self.limit is not None:
            await self.limit.take(end - start)
        return await self.client.get_range(self.repository, self.digest, start, end)

    async def stream(self) -> AsyncIterator[bytes]:
        url = self.client.url(self.repository, f"blobs/{self.digest}")
        resp = await self.client.send("GET", url, f"repository:{self.repository}:pull")
        async with resp:
            if resp.status != 200:
                raise await _error(resp, BlobUnknown)
            try:
                async for piece in resp.content.iter_chunked(1 << 20):
                    if self.limit is not None:
                        await self.limit.take(len(piece))
                    yield piece
            except Exception as e:
                raise Unavailable(url=url, reason=f"{type(e).__name__}: {e}") from e


class RegistryEndpoint:
    def __init__(self, client: RegistryClient, limit: RateLimit | None = None) -> None:
        self.client = client
        self.name = client.registry
        self.limit = limit
        self.uploads: list[BlobUpload] = []  # kept for status and tests: sent, resumes

    async def head_manifest(self, repository: str, reference: str) -> Digest | None:
        return await self.client.head_manifest(repository, reference)

    async def get_manifest(self, repository: str, reference: str) -> FetchedManifest | None:
        return await self.client.find_manifest(repository, reference, ACCEPT_MANIFESTS)

    async def put_manifest(self, repository: str, reference: str, body: bytes,
                           media_type: str) -> bool:
        headers = await self.client.put_manifest_answer(repository, reference, body,
                                                        media_type)
        return any(k.lower() == "oci-subject" for k in headers)

    async def delete_manifest(self, repository: str, digest: Digest) -> bool:
        return await self.client.delete_manifest(repository, digest)

    async def has_blob(self, repository: str, digest: Digest) -> bool:
        return await self.client.blob_exists(repository, digest)

    async def referrers(self, repository: str, digest: Digest
                        ) -> list[dict[str, object]] | None:
        url = self.client.url(repository, f"referrers/{digest}")
        async with await self.client.send("GET", url, f"repository:{repository}:pull",
                                          headers={"Accept": "application/vnd.oci.image."
                                                   "index.v1+json"}) as resp:
            if resp.status in (404, 405):
                return None
            if resp.status != 200:
                raise await _error(resp, BlobUnknown)
            body = await read_limited(resp, MAX_MANIFEST_BYTES)
        try:
            doc = json.loads(body)
            found = doc.get("manifests") or []
        except (ValueError, AttributeError):
            return None  # not an index: no referrers API here
        return [m for m in found if isinstance(m, dict)]

    async def tag_pages(self, repository: str) -> AsyncIterator[list[str]]:
        async for page in listing.tags(self.client, repository):
            yield page

    def reader(self, repository: str, digest: Digest, size: int) -> BlobReader:
        return RegistryBlobReader(self.client, repository, digest, size, self.limit)

    async def receive_blob(self, repository: str, reader: BlobReader,
                           settings: TransferSettings, progress: Progress | None,
                           mount_from: list[str]) -> BlobOutcome:
        if await self.client.blob_exists(repository, reader.digest):
            return "present"
        for other in [m for m in mount_from if m != repository][:1]:
            # One try: a registry that refuses one mount refuses the others.
            location = await start_upload(self.client, repository, mount=reader.digest,
                                          mount_from=other)
            if location is None:
                return "mounted"
            with contextlib.suppress(Exception):  # the session it opened instead
                await cancel_upload(self.client, repository, location)
        upload = BlobUpload(self.client, repository, reader, settings, progress)
        self.uploads.append(upload)
        await upload.run()
        return "uploaded"

    async def close(self) -> None:
        await self.client.close()
