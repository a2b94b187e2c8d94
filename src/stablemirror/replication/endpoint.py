"""What the copier needs of either end of a copy (a registry or an OCI layout directory),
and what a blob's source offers the mover. Implementations: registry_endpoint.py,
layout.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from stablemirror.client.registry import FetchedManifest
from stablemirror.oci.digest import Digest

BlobOutcome = Literal["present", "mounted", "uploaded"]
# (digest, bytes at the destination so far, blob size): called as chunks are acknowledged.
Progress = Callable[[Digest, int, int], None]


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """How one blob moves: `chunk_size` bytes per ranged GET and per PATCH, up to
    `parallel_streams` ranges in flight (so at most streams x chunk bytes in memory), blobs
    up to one chunk in a single PUT; `attempts` tries per blob and per range, with a
    doubling backoff from `backoff_seconds` up to `backoff_max_seconds`."""

    chunk_size: int = 8 << 20
    parallel_streams: int = 4
    attempts: int = 6
    backoff_seconds: float = 0.2
    backoff_max_seconds: float = 10.0
    bandwidth_limit: int = 0  # bytes/second read from the source; 0: unlimited


class BlobReader(Protocol):
    digest: Digest
    size: int

    async def read_range(self, start: int, end: int) -> bytes | None:
        """Bytes [start, end); None when the source cannot serve ranges."""
        ...

    def stream(self) -> AsyncIterator[bytes]:
        """The whole blob from its first byte."""
        ...


class Endpoint(Protocol):
    """One side of a copy. `repository` is ignored by layouts (one image store per dir)."""

    name: str

    async def head_manifest(self, repository: str, reference: str) -> Digest | None: ...

    async def get_manifest(self, repository: str, reference: str) -> FetchedManifest | None:
        ...

    async def put_manifest(self, repository: str, reference: str, body: bytes,
                           media_type: str) -> bool:
        """Store exact bytes at a tag or digest; True when the endpoint indexed the
        manifest's subject for the referrers API itself."""
        ...

    async def delete_manifest(self, repository: str, digest: Digest) -> bool: ...

    async def has_blob(self, repository: str, digest: Digest) -> bool: ...

    async def referrers(self, repository: str, digest: Digest) -> list[dict[str, object]] | None:
        """Descriptors of the manifests whose subject is `digest`; None without a
        referrers API (the caller then reads the `sha256-<hex>` tag fallback)."""
        ...

    def tag_pages(self, repository: str) -> AsyncIterator[list[str]]: ...

    def reader(self, repository: str, digest: Digest, size: int) -> BlobReader: ...

    async def receive_blob(self, repository: str, reader: BlobReader,
                           settings: TransferSettings, progress: Progress | None,
                           mount_from: list[str]) -> BlobOutcome:
        """Make the destination hold the blob: present already, mounted from one of
        `mount_from` (repositories of this endpoint known to hold it), or uploaded."""
        ...

    async def close(self) -> None: ...
