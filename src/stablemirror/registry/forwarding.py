"""A RegistryService that hands every call to an inner one: the base of service wrappers
(trust enforcement, verified reads), which override only what they guard."""

from __future__ import annotations

from collections.abc import AsyncIterable

from stablemirror.index.protocol import StoredManifest
from stablemirror.oci.digest import Digest
from stablemirror.registry.protocol import (
    BlobSource,
    PutManifestResult,
    RegistryService,
    RequestContext,
)


class ForwardingRegistry:
    def __init__(self, inner: RegistryService) -> None:
        self.inner = inner

    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        return await self.inner.get_manifest(ctx, repository, reference)

    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        return await self.inner.put_manifest(ctx, repository, reference, body, content_type,
                                             extra_tags)

    async def delete_manifest(self, ctx: RequestContext, repository: str, reference: str
                              ) -> None:
        await self.inner.delete_manifest(ctx, repository, reference)

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        return await self.inner.open_blob(ctx, repository, digest)

    async def delete_blob(self, ctx: RequestContext, repository: str, digest: str) -> None:
        await self.inner.delete_blob(ctx, repository, digest)

    async def start_upload(self, ctx: RequestContext, repository: str) -> str:
        return await self.inner.start_upload(ctx, repository)

    async def mount_blob(self, ctx: RequestContext, repository: str, digest: str,
                         source: str | None) -> bool:
        return await self.inner.mount_blob(ctx, repository, digest, source)

    async def upload_monolithic(self, ctx: RequestContext, repository: str, digest: str,
                                body: AsyncIterable[bytes]) -> Digest:
        return await self.inner.upload_monolithic(ctx, repository, digest, body)

    async def upload_status(self, ctx: RequestContext, repository: str, upload_id: str) -> int:
        return await self.inner.upload_status(ctx, repository, upload_id)

    async def upload_chunk(self, ctx: RequestContext, repository: str, upload_id: str,
                           start: int | None, body: AsyncIterable[bytes]) -> int:
        return await self.inner.upload_chunk(ctx, repository, upload_id, start, body)

    async def finish_upload(self, ctx: RequestContext, repository: str, upload_id: str,
                            digest: str, body: AsyncIterable[bytes] | None) -> Digest:
        return await self.inner.finish_upload(ctx, repository, upload_id, digest, body)

    async def cancel_upload(self, ctx: RequestContext, repository: str, upload_id: str
                            ) -> None:
        await self.inner.cancel_upload(ctx, repository, upload_id)

    async def list_tags(self, ctx: RequestContext, repository: str, n: int | None,
                        last: str | None) -> list[str]:
        return await self.inner.list_tags(ctx, repository, n, last)

    async def catalog(self, ctx: RequestContext, n: int | None, last: str | None) -> list[str]:
        return await self.inner.catalog(ctx, n, last)

    async def referrers(self, ctx: RequestContext, repository: str, digest: str,
                        artifact_type: str | None) -> bytes:
        return await self.inner.referrers(ctx, repository, digest, artifact_type)
