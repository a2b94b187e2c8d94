"""Namespaces: which repositories are hosted here, proxied, or both (local content wins).

RoutingRegistry implements the registry-service protocol by handing each call to the
hosted registry or to the proxied reads of the longest matching namespace prefix.
Repositories no namespace matches are hosted. Writes always go to the hosted registry;
in a namespace that only proxies they are refused here, so the proxied side implements
reads alone. Listings and referrers are the hosted registry's: what a mirror has cached
is indexed like what was pushed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from typing import Literal, Protocol

from stablemirror.index.protocol import StoredManifest
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, ManifestUnknown, Unsupported
from stablemirror.oci.patterns import longest_prefix
from stablemirror.registry.protocol import (
    BlobSource,
    PutManifestResult,
    RegistryService,
    RequestContext,
)

Mode = Literal["hosted", "proxy", "both"]


class ProxiedReads(Protocol):
    """What a proxied namespace serves (mirror/proxied.py): reads that may go upstream."""

    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest: ...

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str
                        ) -> BlobSource: ...


class RoutingRegistry:
    def __init__(self, hosted: RegistryService,
                 namespaces: Sequence[tuple[str, Mode, ProxiedReads | None]]) -> None:
        self.hosted = hosted
        self.namespaces = list(namespaces)

    def qualify(self, ns: str, name: str) -> str:
        """containerd's `?ns=<registry>`: fold the registry into the name whenever a
        namespace prefix names it or a mirror serves it, so each registry's content has
        its own cache entries, also under a catch-all (`--upstream`) namespace: `x` from
        docker.io and `x` from ghcr.io are different repositories. The catch-all's mirror
        passes the `ns` on upstream (MirrorRegistry.upstream_reference)."""
        qualified = f"{ns}/{name}"
        prefix, mode, _ = self._match(qualified)
        if prefix or mode != "hosted":
            return qualified
        return name

    def _match(self, repository: str) -> tuple[str, Mode, ProxiedReads | None]:
        # The longest prefix wins, so "docker.io/library/" beats "docker.io/".
        best = longest_prefix(repository, self.namespaces, lambda n: n[0])
        return best or ("", "hosted", None)

    def _route(self, repository: str) -> tuple[Mode, ProxiedReads | None]:
        _, mode, mirror = self._match(repository)
        return mode, mirror

    def is_proxied(self, repository: str) -> bool:
        """Only proxied, never hosted: what cache eviction may remove."""
        return self._route(repository)[0] == "proxy"

    def _writable(self, repository: str) -> RegistryService:
        mode, mirror = self._route(repository)
        if mode == "proxy" and mirror is not None:
            raise Unsupported(repository=repository, reason="namespace is a read-only mirror")
        return self.hosted

    # -- reads: local first when the namespace is both ---------------------------------------
    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        mode, mirror = self._route(repository)
        if mirror is None or mode == "hosted":
            return await self.hosted.get_manifest(ctx, repository, reference)
        if mode == "both":
            try:
                return await self.hosted.get_manifest(ctx, repository, reference)
            except ManifestUnknown:
                pass
        return await mirror.get_manifest(ctx, repository, reference)

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        mode, mirror = self._route(repository)
        if mirror is None or mode == "hosted":
            return await self.hosted.open_blob(ctx, repository, digest)
        if mode == "both":
            try:
                return await self.hosted.open_blob(ctx, repository, digest)
            except BlobUnknown:
                pass
        return await mirror.open_blob(ctx, repository, digest)

    async def list_tags(self, ctx: RequestContext, repository: str, n: int | None,
                        last: str | None) -> list[str]:
        return await self.hosted.list_tags(ctx, repository, n, last)

    async def catalog(self, ctx: RequestContext, n: int | None, last: str | None) -> list[str]:
        return await self.hosted.catalog(ctx, n, last)

    async def referrers(self, ctx: RequestContext, repository: str, digest: str,
                        artifact_type: str | None) -> bytes:
        return await self.hosted.referrers(ctx, repository, digest, artifact_type)

    # -- writes: hosted, refused where the namespace only proxies ----------------------------
    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        return await self._writable(repository).put_manifest(ctx, repository, reference, body,
                                                             content_type, extra_tags)

    async def delete_manifest(self, ctx: RequestContext, repository: str, reference: str
                              ) -> None:
        await self._writable(repository).delete_manifest(ctx, repository, reference)

    async def delete_blob(self, ctx: RequestContext, repository: str, digest: str) -> None:
        await self._writable(repository).delete_blob(ctx, repository, digest)

    async def start_upload(self, ctx: RequestContext, repository: str) -> str:
        return await self._writable(repository).start_upload(ctx, repository)

    async def mount_blob(self, ctx: RequestContext, repository: str, digest: str,
                         source: str | None) -> bool:
        return await self._writable(repository).mount_blob(ctx, repository, digest, source)

    async def upload_monolithic(self, ctx: RequestContext, repository: str, digest: str,
                                body: AsyncIterable[bytes]) -> Digest:
        return await self._writable(repository).upload_monolithic(ctx, repository, digest, body)

    async def upload_status(self, ctx: RequestContext, repository: str, upload_id: str) -> int:
        return await self._writable(repository).upload_status(ctx, repository, upload_id)

    async def upload_chunk(self, ctx: RequestContext, repository: str, upload_id: str,
                           start: int | None, body: AsyncIterable[bytes]) -> int:
        return await self._writable(repository).upload_chunk(ctx, repository, upload_id,
                                                             start, body)

    async def finish_upload(self, ctx: RequestContext, repository: str, upload_id: str,
                            digest: str, body: AsyncIterable[bytes] | None) -> Digest:
        return await self._writable(repository).finish_upload(ctx, repository, upload_id,
                                                              digest, body)

    async def cancel_upload(self, ctx: RequestContext, repository: str, upload_id: str
                            ) -> None:
        await self._writable(repository).cancel_upload(ctx, repository, upload_id)
