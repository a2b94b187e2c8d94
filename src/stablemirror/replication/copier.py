"""Copy images between endpoints byte for byte: manifests by digest (never converted),
their blobs (skipped when present, mounted when the destination holds them in a repository
this copy wrote to), referrers (referrers API, or the `sha256-<hex>` tag fallback) and cosign
`.sig`/`.att`/`.sbom` tags. A tag is compared with a HEAD on both sides before anything
moves; an unchanged tag costs two HEADs and a referrers listing."""

from __future__ import annotations

import asyncio
import json
import platform
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from stablemirror.client.registry import FetchedManifest
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestUnknown
from stablemirror.oci.manifest import Descriptor, Manifest, parse_manifest
from stablemirror.replication.endpoint import Endpoint, Progress, TransferSettings

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


class PlatformMismatch(Exception):
    """A platform filter that would need an index with fewer entries (another digest)."""


def host_platform() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(
        platform.machine(), platform.machine())
    return f"linux/{machine}"


def platform_matches(desc: Descriptor, wanted: list[str]) -> bool:
    p = desc.platform or {}
    name = f"{p.get('os', '')}/{p.get('architecture', '')}"
    with_variant = f"{name}/{p['variant']}" if p.get("variant") else name
    return any(w in (name, with_variant) for w in wanted)


@dataclass
class CopyReport:
    manifests_copied: int = 0
    manifests_present: int = 0
    tags_unchanged: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    referrers_copied: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # "repo:tag" -> digest copied

    @property
    def artifacts(self) -> int:
        return self.manifests_copied


class ImageCopier:
    """`platforms`: None copies an index whole (`--all`); a list keeps the matching
    manifests of an index: all of them match -> the index byte for byte; exactly one -> that
    manifest under the tag (skopeo without `--all`); otherwise PlatformMismatch, because an
    index cannot lose entries without getting another digest."""

    def __init__(self, source: Endpoint, destination: Endpoint,
                 settings: TransferSettings | None = None, *,
                 platforms: list[str] | None = None, parallel_blobs: int = 4,
                 progress: Progress | None = None, extras: bool = True) -> None:
        self.src = source
        self.dst = destination
        self.settings = settings or TransferSettings()
        self.platforms = platforms
        self.progress = progress
        self.extras = extras
        self.report = CopyReport()
        self._blobs = asyncio.Semaphore(max(1, parallel_blobs))
        self._done: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._holders: dict[str, set[str]] = defaultdict(set)  # blob -> dst repositories

    async def copy(self, src_repo: str, reference: str, dst_repo: str,
                   dst_reference: str | None = None) -> Digest:
        """Copy `reference` (a tag or digest) of `src_repo` to `dst_repo` (at
        `dst_reference`, by default the same tag); the digest now at the destination."""
        tag = dst_reference if dst_reference is not None else (
            None if ":" in reference else reference)
        src_digest = await self.src.head_manifest(src_repo, reference)
        if src_digest is None:
            raise ManifestUnknown(repository=src_repo, reference=reference,
                                  registry=self.src.name)
        fetched: FetchedManifest | None = None
        if self.platforms is not None:
            fetched = await self._fetch(src_repo, str(src_digest))
            fetched = await self._select(src_repo, fetched)
            src_digest = fetched.digest
        if tag is not None and await self.dst.head_manifest(dst_repo, tag) == src_digest:
            self.report.tags_unchanged += 1
            if self.extras:
                await self._extras(src_repo, dst_repo, src_digest)
            return src_digest
        fetched = fetched or await self._fetch(src_repo, str(src_digest))
        await self._manifest(src_repo, dst_repo, fetched, tag)
        self.report.digests[f"{dst_repo}:{tag or src_digest}"] = str(src_digest)
        return src_digest

    async def _fetch(self, repo: str, reference: str) -> FetchedManifest:
        found = await self.src.get_manifest(repo, reference)
        if found is None:
            raise ManifestUnknown(repository=repo, reference=reference, registry=self.src.name)
        return found

    async def _select(self, repo: str, fetched: FetchedManifest) -> FetchedManifest:
        if fetched.media_type not in mt.INDEXES or self.platforms is None:
            return fetched
        index = parse_manifest(fetched.content, fetched.media_type)
        matching = [c for c in index.children if platform_matches(c, self.platforms)]
        if len(matching) == len(index.children):
            return fetched
        if len(matching) == 1:
            return await self._fetch(repo, str(matching[0].digest))
        raise PlatformMismatch(
            f"{len(matching)} of the {len(index.children)} manifests of index "
            f"{fetched.digest} match platforms {self.platforms}: copy it with --all, or "
            "filter one platform")

    async def _manifest(self, src_repo: str, dst_repo: str, fetched: FetchedManifest,
                        tag: str | None) -> None:
        """The manifest with everything it needs at the destination, then its tag; once
        per (repository, digest) however many tags and referrers lead to it."""
        key = (dst_repo, str(fetched.digest))
        if key in self._done:
            await self._done[key]
        else:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._done[key] = done
            try:
                await self._content(src_repo, dst_repo, fetched)
            except BaseException as e:
                del self._done[key]
                done.set_exception(e)
                done.exception()  # retrieved: waiters re-raise it, nobody logs it twice
                raise
            done.set_result(None)
        if tag is not None:
            await self.dst.put_manifest(dst_repo, tag, fetched.content, fetched.media_type)

    async def _content(self, src_repo: str, dst_repo: str, fetched: FetchedManifest) -> None:
        m = parse_manifest(fetched.content, fetched.media_type, fetched.digest.algorithm)
        if await self.dst.head_manifest(dst_repo, str(m.digest)) is not None:
            self.report.manifests_present += 1  # a registry holds what a manifest names
        else:
            if m.is_index:
                children = [self._fetch(src_repo, str(c.digest)) for c in m.children]
                for child in await asyncio.gather(*children):
                    await self._manifest(src_repo, dst_repo, child, None)
            else:
                await asyncio.gather(*(self._blob(src_repo, dst_repo, b) for b in m.blobs))
            indexed = await self.dst.put_manifest(dst_repo, str(m.digest), m.raw, m.media_type)
            self.report.manifests_copied += 1
            if m.subject is not None and not indexed:
                await self._fallback_add(dst_repo, m)
        if self.extras:
            await self._extras(src_repo, dst_repo, m.digest)

    async def _blob(self, src_repo: str, dst_repo: str, blob: Descriptor) -> None:
        async with self._blobs:
            reader = self.src.reader(src_repo, blob.digest, blob.size)
            outcome = await self.dst.receive_blob(
                dst_repo, reader, self.settings, self.progress,
                sorted(self._holders[str(blob.digest)]))
        self._holders[str(blob.digest)].add(dst_repo)
        if outcome == "uploaded":
            self.report.blobs_uploaded += 1
            self.report.bytes_copied += blob.size
        elif outcome == "mounted":
            self.report.blobs_mounted += 1
        else:
            self.report.blobs_present += 1
        if outcome != "uploaded" and self.progress is not None:
            self.progress(blob.digest, blob.size, blob.size)

    async def _extras(self, src_repo: str, dst_repo: str, digest: Digest) -> None:
        """Referrers of `digest` and its cosign tags."""
        fallback = f"{digest.algorithm}-{digest.hex}"
        listed = await self.src.referrers(src_repo, digest)
        if listed is None:
            index = await self.src.get_manifest(src_repo, fallback)
            if index is not None:
                listed = [m for m in json.loads(index.content).get("manifests", [])
                          if isinstance(m, dict)]
                if await self.dst.head_manifest(dst_repo, fallback) != index.digest:
                    await self._manifest(src_repo, dst_repo, index, fallback)
        for entry in listed or []:
            ref = str(entry.get("digest", ""))
            if (dst_repo, ref) in self._done:
                continue
            child = await self._fetch(src_repo, ref)
            await self._manifest(src_repo, dst_repo, child, None)
            self.report.referrers_copied += 1
        for suffix in COSIGN_SUFFIXES:
            tag = fallback + suffix
            at_src = await self.src.head_manifest(src_repo, tag)
            if at_src is not None and await self.dst.head_manifest(dst_repo, tag) != at_src:
                await self._manifest(src_repo, dst_repo, await self._fetch(src_repo, tag), tag)

    async def _fallback_add(self, dst_repo: str, m: Manifest) -> None:
        """A destination without a referrers API: list the referrer in the subject's
        `sha256-<hex>` tag index, as the distribution spec tells clients to."""
        assert m.subject is not None
        tag = f"{m.subject.digest.algorithm}-{m.subject.digest.hex}"
        current = await self.dst.get_manifest(dst_repo, tag)
        doc: dict[str, Any] = json.loads(current.content) if current is not None else {
            "schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        entries = [e for e in doc.get("manifests") or [] if isinstance(e, dict)]
        if any(e.get("digest") == str(m.digest) for e in entries):
            return
        entry: dict[str, object] = {"mediaType": m.media_type, "digest": str(m.digest),
                                    "size": len(m.raw)}
        if m.effective_artifact_type:
            entry["artifactType"] = m.effective_artifact_type
        if m.annotations:
            entry["annotations"] = m.annotations
        doc["manifests"] = [*entries, entry]
        await self.dst.put_manifest(dst_repo, tag, json.dumps(doc).encode(), mt.OCI_INDEX)
