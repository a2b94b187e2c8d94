"""The hosted registry: content pushed here, stored in the blob store, indexed in the index."""

from __future__ import annotations

import errno
import json
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from stablemirror.index.audit_events import AuditEvent, AuditSink
from stablemirror.index.protocol import RegistryIndex, StoredManifest
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    StorageUnwritable,
    UploadRangeInvalid,
)
from stablemirror.oci.manifest import Descriptor, Manifest, parse_manifest
from stablemirror.oci.names import is_valid_tag, parse_reference, validate_name
from stablemirror.registry.protocol import BlobSource, PutManifestResult, RequestContext
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.registry")
# What a store says when it may not write at all: a clean 503, not an exception's name.
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


@asynccontextmanager
async def _storing() -> AsyncIterator[None]:
    """Store writes of a push: a refused write becomes StorageUnwritable. Only those errnos:
    a client hanging up mid-body is an OSError too, and must stay what it is."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _REFUSED or isinstance(exc, ConnectionError):
            raise
        log.error("push refused by the blob store: %s: %s", exc.strerror, exc.filename)
        raise StorageUnwritable(reason=exc.strerror or "refused") from exc


def _same_size(d: Descriptor, stored: int | None, kind: str, field: str = "size") -> None:
    if stored is not None and stored != d.size:
        raise ManifestInvalid(field=field, digest=str(d.digest), size=d.size,
                              stored_size=stored,
                              reason=f"descriptor size differs from the stored {kind}")


class HostedRegistry:
    def __init__(
        self,
        store: BlobStore,
        index: RegistryIndex,
        audit: AuditSink | None = None,
    ) -> None:
        """`audit`: when given, pulls are recorded through it and every change hands its
        audit event to the index, which writes it in the change's own transaction."""
        self.store = store
        self.index = index
        self.audit = audit

    def _event(
        self, ctx: RequestContext, action: str, repository: str, reference: str = "",
        digest: str = "", **detail: Any,
    ) -> AuditEvent | None:
        if self.audit is None:
            return None
        return AuditEvent(action=action, actor=ctx.actor or "", client=ctx.client,
                          user_agent=ctx.user_agent, request_id=ctx.request_id,
                          repository=repository, reference=reference, digest=digest,
                          detail=detail)

    # -- manifests --------------------------------------------------------------------------
    async def get_manifest(
        self, ctx: RequestContext, repository: str, reference: str
    ) -> StoredManifest:
        validate_name(repository)
        if ":" not in reference and not is_valid_tag(reference):
            raise ManifestUnknown(repository=repository, reference=reference)
        found = await self.index.get_manifest(repository, parse_reference(reference))
        if found is None:
            raise ManifestUnknown(repository=repository, reference=reference)
        await self.record_pull(ctx, repository, reference, found.digest)
        return found

    async def record_pull(
        self, ctx: RequestContext, repository: str, reference: str, digest: str
    ) -> None:
        """Audit a manifest GET (a HEAD reads no content: it is not a pull). Other
        services that serve manifests (the mirror) call this too."""
        pull = self._event(ctx, "manifest.pull", repository, reference, digest)
        if pull is not None and self.audit is not None and ctx.method != "HEAD":
            await self.audit(pull)

    async def put_manifest(
        self,
        ctx: RequestContext,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str,
        extra_tags: list[str],
    ) -> PutManifestResult:
        validate_name(repository)
        ref = parse_reference(reference)
        algorithm = ref.algorithm if isinstance(ref, Digest) else "sha256"
        manifest = parse_manifest(body, content_type, algorithm)
        if isinstance(ref, Digest) and ref != manifest.digest:
            raise DigestInvalid(digest=str(ref), actual=str(manifest.digest))
        tags = [ref] if isinstance(ref, str) else []
        for tag in extra_tags:
            if not is_valid_tag(tag):
                raise ManifestInvalid(tag=tag, reason="invalid tag")
            tags.append(tag)
        await self._check_sizes(repository, manifest)
        event = self._event(ctx, "manifest.push", repository, reference, str(manifest.digest),
                            tags=tags, media_type=manifest.media_type)
        await self.index.put_manifest(repository, manifest, tags, audit=event)
        return PutManifestResult(
            manifest.digest, manifest.subject.digest if manifest.subject else None
        )

    async def _check_sizes(self, repository: str, manifest: Manifest) -> None:
        """A descriptor names content by digest *and* size: for content this repository
        already holds, the size must be the stored one (MANIFEST_INVALID: the content is
        known, the descriptor is wrong). Content not here is the index's business: it
        refuses missing blobs and children (MANIFEST_BLOB_UNKNOWN) in the same transaction
        that stores the manifest, and lets a subject not exist yet, as the spec requires.
        Sizes of a digest never change, so checking before that transaction is not racy."""
        stored: dict[Digest, int | None] = {}  # one look-up per digest
        for d in manifest.blobs:
            if d.digest not in stored:
                stored[d.digest] = await self.index.blob_size(repository, d.digest)
            _same_size(d, stored[d.digest], "blob")
        named = [(f"manifests[{i}]", d) for i, d in enumerate(manifest.children)]
        if manifest.subject is not None:
            named.append(("subject", manifest.subject))
        for where, d in named:
            if d.digest not in stored:
                found = await self.index.get_manifest(repository, d.digest)
                stored[d.digest] = None if found is None else len(found.content)
            _same_size(d, stored[d.digest], "manifest", f"{where}.size")

    async def delete_manifest(self, ctx: RequestContext, repository: str, reference: str) -> None:
        validate_name(repository)
        ref = parse_reference(reference)
        deleted = (
            await self.index.delete_manifest(
                repository, ref, audit=self._event(ctx, "manifest.delete", repository,
                                                   reference, str(ref)))
            if isinstance(ref, Digest)
            else await self.index.delete_tag(
                repository, ref, audit=self._event(ctx, "tag.delete", repository, reference))
        )
        if not deleted:
            raise ManifestUnknown(repository=repository, reference=reference)

    # -- blobs -----------------------------------------------------------------------------------
    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        validate_name(repository)
        d = Digest.parse(digest)
        size = await self.index.blob_size(repository, d)
        if size is None:
            raise BlobUnknown(repository=repository, digest=digest)
        path = self.store.local_path(d)
        if path is not None and not path.exists():
            raise BlobUnknown(repository=repository, digest=digest)
        return BlobSource(d, size, path, lambda offset, length: self.store.read(d, offset, length),
                          redirect_url=await self.store.redirect_url(d),
                          first_piece_before_headers=path is None)

    async def delete_blob(self, ctx: RequestContext, repository: str, digest: str) -> None:
        validate_name(repository)
        # The bytes stay until GC proves nothing references them.
        if not await self.index.unlink_blob(repository, Digest.parse(digest)):
            raise BlobUnknown(repository=repository, digest=digest)

    # -- uploads ---------------------------------------------------------------------------------
    async def start_upload(self, ctx: RequestContext, repository: str) -> str:
        validate_name(repository)
        upload_id = uuid.uuid4().hex
        async with _storing():
            await self.store.upload_create(upload_id)
        try:
            await self.index.create_upload(repository, upload_id)
        except BaseException:
            await self.store.upload_abort(upload_id)  # no staged upload without its row
            raise
        return upload_id

    async def mount_blob(
        self, ctx: RequestContext, repository: str, digest: str, source: str | None
    ) -> bool:
        """Link an existing blob into `repository`; from `source`, or from anywhere if None."""
        validate_name(repository)
        d = Digest.parse(digest)
        if source is not None:
            validate_name(source)
            size = await self.index.blob_size(source, d)
        else:
            size = await self.index.blob_size_anywhere(d)
        if size is None or await self.store.stat(d) is None:
            return False
        event = self._event(ctx, "blob.mount", repository, "", str(d), source=source)
        await self.index.link_blob(repository, d, size, audit=event)
        return True

    async def upload_monolithic(
        self, ctx: RequestContext, repository: str, digest: str, body: AsyncIterable[bytes]
    ) -> Digest:
        d = Digest.parse(digest)
        upload_id = await self.start_upload(ctx, repository)
        try:
            async with _storing():
                await self.store.upload_append(upload_id, 0, body)
            return await self._commit(ctx, repository, upload_id, d)
        finally:
            await self._drop_upload(upload_id)

    async def _session(self, repository: str, upload_id: str) -> None:
        validate_name(repository)
        upload = await self.index.get_upload(upload_id)
        if upload is None or upload.repository != repository:
            raise BlobUploadUnknown(repository=repository, upload=upload_id)

    async def upload_status(self, ctx: RequestContext, repository: str, upload_id: str) -> int:
        await self._session(repository, upload_id)
        return await self.store.upload_size(upload_id)

    async def upload_chunk(
        self,
        ctx: RequestContext,
        repository: str,
        upload_id: str,
        start: int | None,
        body: AsyncIterable[bytes],
    ) -> int:
        await self._session(repository, upload_id)
        size = await self.store.upload_size(upload_id)
        if start is not None and start != size:
            err = UploadRangeInvalid(upload=upload_id, expected_start=size, start=start)
            err.headers["Range"] = f"0-{size - 1}" if size else "0-0"
            raise err
        async with _storing():
            return await self.store.upload_append(upload_id, size, body)

    async def finish_upload(
        self,
        ctx: RequestContext,
        repository: str,
        upload_id: str,
        digest: str,
        body: AsyncIterable[bytes] | None,
    ) -> Digest:
        d = Digest.parse(digest)
        await self._session(repository, upload_id)
        if body is not None:
            size = await self.store.upload_size(upload_id)
            async with _storing():
                await self.store.upload_append(upload_id, size, body)
        try:
            return await self._commit(ctx, repository, upload_id, d)
        except DigestInvalid:
            # Wrong bytes are never kept: the session ends with them.
            await self._drop_upload(upload_id)
            raise
        finally:
            if await self.index.get_upload(upload_id) is not None:
                await self._drop_upload(upload_id)

    async def _commit(
        self, ctx: RequestContext, repository: str, upload_id: str, digest: Digest
    ) -> Digest:
        size = await self.store.upload_verify(upload_id, digest)
        # Index first, bytes second: GC never removes a blob whose row was touched since
        # its cutoff, so the file we publish cannot be collected under us (registry/gc.py).
        event = self._event(ctx, "blob.push", repository, "", str(digest), size=size)
        await self.index.link_blob(repository, digest, size, audit=event)
        async with _storing():
            await self.store.upload_publish(upload_id, digest)
        return digest

    async def _drop_upload(self, upload_id: str) -> None:
        await self.store.upload_abort(upload_id)
        await self.index.delete_upload(upload_id)

    async def cancel_upload(self, ctx: RequestContext, repository: str, upload_id: str) -> None:
        await self._session(repository, upload_id)
        await self._drop_upload(upload_id)

    # -- listings --------------------------------------------------------------------------------
    async def list_tags(
        self, ctx: RequestContext, repository: str, n: int | None, last: str | None
    ) -> list[str]:
        validate_name(repository)
        found = await self.index.list_tags(repository, n, last)
        if found is None:
            raise NameUnknown(repository=repository)
        return found

    async def catalog(self, ctx: RequestContext, n: int | None, last: str | None) -> list[str]:
        return await self.index.list_repositories(n, last)

    async def referrers(
        self, ctx: RequestContext, repository: str, digest: str, artifact_type: str | None
    ) -> bytes:
        validate_name(repository)
        d = Digest.parse(digest)
        found = await self.index.referrers(repository, d, artifact_type)
        manifests = []
        for r in found:
            entry: dict[str, object] = {
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            }
            if r.artifact_type:
                entry["artifactType"] = r.artifact_type
            if r.annotations:
                entry["annotations"] = r.annotations
            manifests.append(entry)
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        return json.dumps(doc, separators=(",", ":")).encode()
