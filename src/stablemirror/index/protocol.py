"""The metadata index protocol. Every backend passes the same contract suite (tests/contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from stablemirror.index.audit_events import AuditEvent
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Manifest


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes
    # Set by a mirror that served this copy although no upstream could confirm it.
    stale: bool = False
    # Set when a release channel was resolved for this client (releases/): the channel name,
    # sent as Stablemirror-Channel so mirrors cache the resolution per identity.
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository: str
    created_at: float


@dataclass(frozen=True, slots=True)
class IndexUsage:
    """Totals for metrics and /status."""

    blobs: int
    blob_bytes: int
    uploads: int


class RegistryIndex(Protocol):
    # repositories
    async def repository_exists(self, name: str) -> bool: ...
    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        """Repositories holding a blob or a manifest (not just an upload), by name after `last`."""
        ...

    # blobs
    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """Size of a blob linked into `repository`, or None."""
        ...

    async def blob_size_anywhere(self, digest: Digest) -> int | None: ...
    async def link_blob(
        self, repository: str, digest: Digest, size: int, audit: AuditEvent | None = None
    ) -> None:
        """`audit`, when given, is appended to the audit chain in the same transaction
        (likewise for put_manifest, delete_manifest and delete_tag)."""
        ...

    async def unlink_blob(self, repository: str, digest: Digest) -> bool: ...

    # manifests and tags
    async def get_manifest(
        self, repository: str, reference: Digest | str
    ) -> StoredManifest | None: ...

    async def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        tags: list[str],
        check_references: bool = True,
        audit: AuditEvent | None = None,
    ) -> None:
        """Store and tag atomically; raises ManifestBlobUnknown if a reference is missing."""
        ...

    async def delete_manifest(
        self, repository: str, digest: Digest, audit: AuditEvent | None = None
    ) -> bool: ...
    async def delete_tag(
        self, repository: str, tag: str, audit: AuditEvent | None = None
    ) -> bool: ...
    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str] | None:
        """Tags in lexical order after `last`; None if the repository is unknown."""
        ...

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None
    ) -> list[Referrer]: ...

    # uploads
    async def create_upload(self, repository: str, upload_id: str) -> None: ...
    async def get_upload(self, upload_id: str) -> Upload | None: ...
    async def delete_upload(self, upload_id: str) -> None: ...
    async def uploads_older_than(self, cutoff: float) -> list[str]: ...

    # garbage collection
    async def unreferenced_blobs(self, cutoff: float) -> list[tuple[str, int]]:
        """Blobs no manifest references and nobody pushed or linked since `cutoff`."""
        ...

    async def forget_blob_if_unreferenced(self, digest: str, cutoff: float) -> bool:
        """Atomically drop an unreferenced, idle blob's rows; False if it became live."""
        ...

    async def blob_known(self, digest: str) -> bool: ...

    async def usage(self) -> IndexUsage:
        """Blob count and bytes, open uploads. A scan: callers cache it."""
        ...

    async def ping(self) -> None:
        """Raise unless the index answers a query on its own tables."""
        ...

    async def close(self) -> None: ...
