"""The registry-service protocol: hosted and proxied namespaces both implement it,
so HTTP handlers never know which one they talk to."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stablemirror.index.protocol import StoredManifest
from stablemirror.metrics import Source
from stablemirror.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks, from where: what authorization decided and what audit records."""

    actor: str | None = None  # user or robot name; None when anonymous
    client: str = ""
    user_agent: str = ""
    request_id: str = ""
    via: str = ""  # the incoming Via header: which proxies this request already passed
    ns: str = ""  # containerd's `?ns=<registry>`: the registry a mirror request is for
    method: str = ""  # HTTP method; a HEAD reads no content (trust policies check GETs)
    # Release channels (releases/identity.py): the Stablemirror-Client-Id and
    # X-Forwarded-For headers, from which a gray release finds the client's cohort.
    client_id: str = ""
    forwarded_for: str = ""
    # Another replica of this mirror asks (api/replica.py): never hand the request back to
    # another replica (mirror/replicas.py).
    from_replica: bool = False


@dataclass(frozen=True, slots=True)
class BlobSource:
    """How to serve a blob: a local file for zero-copy, or a stream of bytes."""

    digest: Digest
    size: int
    path: Path | None
    open_stream: Callable[[int, int], AsyncIterator[bytes]]  # (offset, length)
    # Where the bytes come from, for stablemirror_blob_bytes_served_total{source}:
    # "local" (our store) or "upstream" (streamed through from a registry).
    source: Source = "local"
    # For a blob still arriving (the mirror): (offset, length) -> (fd, offset, count) pieces
    # as they become sendable, so the HTTP layer can sendfile(2) from the file being fetched.
    regions: Callable[[int, int], AsyncIterator[tuple[int, int, int]]] | None = None
    # A URL the client may GET the bytes from itself (S3 with `redirect: true`): 307.
    redirect_url: str | None = None
    # A remote store (S3): wait for the stream's first piece before sending headers, so a
    # store that does not answer still gets a clean error response (api/ranges.py).
    first_piece_before_headers: bool = False


@dataclass(frozen=True, slots=True)
class PutManifestResult:
    digest: Digest
    subject: Digest | None


class RegistryService(Protocol):
    async def get_manifest(
        self, ctx: RequestContext, repository: str, reference: str
    ) -> StoredManifest: ...
    async def put_manifest(
        self,
        ctx: RequestContext,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str,
        extra_tags: list[str],
    ) -> PutManifestResult: ...
    async def delete_manifest(
        self, ctx: RequestContext, repository: str, reference: str
    ) -> None: ...

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource: ...
    async def delete_blob(self, ctx: RequestContext, repository: str, digest: str) -> None: ...

    async def start_upload(self, ctx: RequestContext, repository: str) -> str: ...
    async def mount_blob(
        self, ctx: RequestContext, repository: str, digest: str, source: str | None
    ) -> bool: ...
    async def upload_monolithic(
        self, ctx: RequestContext, repository: str, digest: str, body: AsyncIterable[bytes]
    ) -> Digest: ...
    async def upload_status(self, ctx: RequestContext, repository: str, upload_id: str) -> int: ...
    async def upload_chunk(
        self,
        ctx: RequestContext,
        repository: str,
        upload_id: str,
        start: int | None,
        body: AsyncIterable[bytes],
    ) -> int: ...
    async def finish_upload(
        self,
        ctx: RequestContext,
        repository: str,
        upload_id: str,
        digest: str,
        body: AsyncIterable[bytes] | None,
    ) -> Digest: ...
    async def cancel_upload(self, ctx: RequestContext, repository: str, upload_id: str) -> None: ...

    async def list_tags(
        self, ctx: RequestContext, repository: str, n: int | None, last: str | None
    ) -> list[str]: ...
    async def catalog(self, ctx: RequestContext, n: int | None, last: str | None) -> list[str]: ...
    async def referrers(
        self, ctx: RequestContext, repository: str, digest: str, artifact_type: str | None
    ) -> bytes: ...
