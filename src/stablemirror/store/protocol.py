"""The blob store protocol. Every backend passes the same contract suite (tests/contract).

Backends: store/filesystem.py (the data dir) and store/s3.py (an S3 bucket); docs/storage.md.
What GC and quarantine move aside is named by an opaque string the backend hands out (a
path for the filesystem, a key for S3), so callers never assume a local file."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol

from stablemirror.oci.digest import Digest


class BlobStore(Protocol):
    """Blobs are immutable and addressed by digest; one copy per digest.

    Uploads are staged under an opaque upload id and become visible only through
    `upload_publish`, after `upload_verify` checked the digest. Nothing partial or unverified
    is ever readable through `stat`, `local_path` or `read`.
    """

    async def stat(self, digest: Digest) -> int | None:
        """Size of a committed blob, or None."""
        ...

    def local_path(self, digest: Digest) -> Path | None:
        """A path for zero-copy serving when the blob sits on local disk (else None)."""
        ...

    async def redirect_url(self, digest: Digest) -> str | None:
        """A URL a client may fetch the blob from itself (S3 with `redirect: true`), or None
        to have the registry serve the bytes."""
        ...

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a committed blob (raises BlobUnknown if absent)."""
        ...

    async def delete(self, digest: Digest) -> bool: ...

    def list_blobs(self) -> AsyncIterator[tuple[Digest, float]]:
        """Every committed blob with its modification time (for GC and scrub)."""
        ...

    async def upload_create(self, upload_id: str) -> None: ...

    async def upload_size(self, upload_id: str) -> int:
        """Bytes received so far (raises BlobUploadUnknown)."""
        ...

    async def upload_append(self, upload_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Append at `offset` (must equal the current size); all-or-nothing. Returns new size."""
        ...

    async def upload_verify(self, upload_id: str, digest: Digest) -> int:
        """Check the staged bytes hash to `digest` (raises DigestInvalid); returns the size."""
        ...

    async def upload_publish(self, upload_id: str, digest: Digest) -> None:
        """Make verified bytes durable and visible as `digest`; ends the upload."""
        ...

    async def publish_verified(self, path: Path, digest: Digest) -> None:
        """Make a local file whose digest the caller verified durable and visible as
        `digest` (the mirror's fetched blobs; S3 uploads it).
        `path` is consumed; an existing copy of `digest` wins. Once this returns, the blob
        survives a crash or power loss."""
        ...

    async def upload_abort(self, upload_id: str) -> None: ...

    def list_uploads(self) -> AsyncIterator[tuple[str, float]]:
        """Upload ids with the time they last changed (for stale-upload cleanup)."""
        ...

    async def trash(self, digest: Digest, token: str) -> str | None:
        """GC step 1: move a blob out of sight; returns what names the trashed copy (None
        if it was not there)."""
        ...

    async def restore(self, digest: Digest, trashed: str) -> None:
        """GC undo: put a trashed blob back (or drop it if a new copy arrived meanwhile)."""
        ...

    async def drop_trashed(self, trashed: str) -> None:
        """GC step 2: remove the trashed copy for good."""
        ...

    async def quarantine(self, digest: Digest, token: str) -> str | None:
        """Move a blob that failed verification out of sight, kept for inspection; returns
        where it went (None if it was not there). A later verified upload or heal of the
        digest publishes anew."""
        ...

    async def aclose(self) -> None:
        """Release connections (the app's cleanup, the end of a command)."""
        ...
