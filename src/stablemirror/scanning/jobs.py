"""Scan jobs: in-process background tasks (the job queue of the scale-out issue has not
landed), started after a push has committed or when a pull finds no result. State lives
in the index (scanning/store.py), so a scan interrupted by a restart is queued again at
start, and any worker process can wait for a scan another one runs.

A manifest scan reads each blob once from the local store (or, in a mirror, through the
registry, which fetches it from upstream and caches it), analyzes it in a worker thread
and caches the result by blob digest; an index scans its child manifests. When done, the
report is attached to the manifest as an OCI referrer (in the local index, which a mirror
answers referrers and digests from, so proxied repositories get it too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from stablemirror.metrics import Metrics, ScanCategory
from stablemirror.oci.manifest import Descriptor, parse_manifest
from stablemirror.registry.protocol import BlobSource, RegistryService, RequestContext
from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.analyze import ANALYZER_VERSION, Analyzer
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.report import MANIFEST_MEDIA_TYPE, referrer, report_referrer
from stablemirror.scanning.store import DONE, FAILED, PENDING, ManifestScan, ScanStore
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.scanning")

SCAN_CTX = RequestContext(actor="system:scan", client="local", user_agent="stablemirror-scan",
                          method="SCAN")
LEASE_SECONDS = 900.0  # a claim older than this belongs to a scan that died
POLL_SECONDS = 0.1
MAX_INDEX_DEPTH = 2
TITLE_ANNOTATIONS = ("org.opencontainers.image.title", "org.cncf.model.filepath")

# Extra per-manifest scanners (Trivy): (repository, manifest digest, media type, content)
# -> findings, plus documents to attach as referrers (artifactType, bytes)
ExtraScanner = Callable[[str, str, str, bytes], Awaitable["ExtraResult"]]


class ExtraResult(Protocol):
    findings: list[Finding]
    attachments: list[tuple[str, bytes]]


def layer_name(d: Descriptor) -> str:
    for key in TITLE_ANNOTATIONS:
        value = (d.annotations or {}).get(key)
        if value:
            return value
    return str(d.digest)


def renamed(findings: Sequence[Finding], old: str, new: str) -> list[Finding]:
    if old == new:
        return list(findings)
    return [replace(f, file=new + f.file[len(old):]) if f.file.startswith(old) else f
            for f in findings]


def analyze_path(path: Path, name: str, spool_dir: Path) -> tuple[list[Finding], int]:
    spool_dir.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return Analyzer(Allowlist(), str(spool_dir)).analyze(f, name), size


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ScanJobs:
    def __init__(self, registry: RegistryService, scans: ScanStore, store: BlobStore,
                 spool_dir: Path, metrics: Metrics | None = None,
                 referrers: RegistryService | None = None,
                 concurrency: int = 1) -> None:
        self.registry = registry  # reads manifests and blobs (through a mirror: from upstream)
        self.scans = scans
        self.store = store
        self.spool_dir = spool_dir
        self.metrics = metrics
        self.referrers = referrers  # where reports are pushed (the hosted registry)
        self.concurrency = concurrency
        self.extra: list[ExtraScanner] = []
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._attachments: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        self._referrers: set[tuple[str, str]] = set()

    async def start(self) -> None:
        for repository, digest in await self.scans.pending():
            self.submit(repository, digest)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def submit(self, repository: str, digest: str) -> asyncio.Task[None]:
        key = (repository, digest)
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._run(repository, digest))
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._tasks.pop(key, None)
                                   if self._tasks.get(key) is t else None)
        return task

    async def wait(self, repository: str, digest: str, seconds: float) -> ManifestScan | None:
        """The finished scan, or the pending row (or None) after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            scan = await self.scans.manifest(repository, digest)
            if scan is not None and scan.status != PENDING and not self.scans.stale(
                    scan, ANALYZER_VERSION):
                return scan
            left = deadline - time.monotonic()
            if left <= 0:
                return scan
            task = self._tasks.get((repository, digest))
            if task is not None and not task.done():
                await asyncio.wait({task}, timeout=left)  # never cancels the scan itself
            else:
                await asyncio.sleep(min(POLL_SECONDS, left))

    async def _run(self, repository: str, digest: str) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        try:
            await self.scans.queue(repository, digest, ANALYZER_VERSION)
            if not await self.scans.claim(repository, digest, LEASE_SECONDS):
                return  # done already, or another process runs it
            async with self._slots:
                findings, media_type, size = await self.scan_manifest(repository, digest)
            await self.scans.finish(repository, digest, DONE, findings)
            self._count("findings" if findings else "clean", findings)
            log.info("scanned %s@%s: %d finding(s)", repository, digest, len(findings))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("scan of %s@%s failed", repository, digest)
            failure = Finding("unsafe_code", "scan_failed", digest, f"scan failed: {e}")
            await self.scans.finish(repository, digest, FAILED, [failure], error=str(e))
            self._count("failed", [])
            return
        attachments = self._attachments.pop((repository, digest), [])
        if (repository, digest) in self._referrers:
            self._referrers.discard((repository, digest))
            return  # a signature, SBOM or report: reports about reports would never end
        try:
            await self._attach(repository, digest, media_type, size, findings, attachments)
        except Exception:
            log.exception("could not attach the scan report to %s@%s", repository, digest)

    def _count(self, result: str, findings: Sequence[Finding]) -> None:
        if self.metrics is None:
            return
        categories: list[ScanCategory] = [f.category for f in findings]
        if result == "clean":
            self.metrics.scan_finished("clean", categories)
        elif result == "findings":
            self.metrics.scan_finished("findings", categories)
        else:
            self.metrics.scan_finished("failed", categories)

    async def scan_manifest(self, repository: str, digest: str, depth: int = 0
                            ) -> tuple[list[Finding], str, int]:
        stored = await self.registry.get_manifest(SCAN_CTX, repository, digest)
        manifest = parse_manifest(stored.content, stored.media_type)
        if depth == 0 and manifest.subject is not None:
            self._referrers.add((repository, digest))  # gets no report of its own
        findings: list[Finding] = []
        for child in manifest.children:
            if depth >= MAX_INDEX_DEPTH:
                findings.append(Finding("unsafe_code", "unanalyzable", str(child.digest),
                                        "image indexes nested too deep"))
                continue
            platform = child.platform or {}
            prefix = "/".join(str(platform[k]) for k in ("os", "architecture")
                              if k in platform) or str(child.digest)
            inner, _, _ = await self.scan_manifest(repository, str(child.digest), depth + 1)
            findings += [replace(f, file=f"{prefix}/{f.file}") for f in inner]
        for blob in manifest.blobs:
            findings += await self._scan_blob(repository, blob)
        for scanner in self.extra:
            extra = await scanner(repository, digest, stored.media_type, stored.content)
            findings += extra.findings
            if depth == 0:
                self._attachments.setdefault((repository, digest), []).extend(
                    extra.attachments)
        return findings, stored.media_type, len(stored.content)

    async def _scan_blob(self, repository: str, d: Descriptor) -> list[Finding]:
        name = layer_name(d)
        cached = await self.scans.blob(str(d.digest), ANALYZER_VERSION)
        if cached is not None:
            return renamed(cached.findings, cached.name, name)
        path = self.store.local_path(d.digest) if await self.store.stat(d.digest) else None
        spooled: Path | None = None
        try:
            if path is None:
                source = await self.registry.open_blob(SCAN_CTX, repository, str(d.digest))
                if source.path is not None:
                    path = source.path
                else:
                    path = spooled = await self._spool(source)
            findings, size = await asyncio.to_thread(analyze_path, path, name,
                                                     self.spool_dir)
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
        if self.metrics is not None:
            self.metrics.scan_read(size)
        await self.scans.put_blob(str(d.digest), ANALYZER_VERSION, name, size, findings)
        return findings

    async def _spool(self, source: BlobSource) -> Path:
        """A blob streamed through the registry (a mirror fetching it) into a file."""
        await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.spool_dir, prefix="scan-")
        with os.fdopen(fd, "wb") as f:
            async for chunk in source.open_stream(0, source.size):
                await asyncio.to_thread(f.write, chunk)
        return Path(name)

    async def _attach(self, repository: str, digest: str, media_type: str, size: int,
                      findings: Sequence[Finding],
                      attachments: Sequence[tuple[str, bytes]] = ()) -> None:
        if self.referrers is None:
            return
        # Into the local index even for a proxied repository: a mirror answers referrers
        # and digests from its own index first, so the report is readable there too.
        report = report_referrer(digest, media_type, size, ANALYZER_VERSION, findings,
                                 time.time())
        others = [referrer(digest, media_type, size, doc, artifact_type, {})
                  for artifact_type, doc in attachments]
        for ref in (*others, report):
            for blob_digest, content in ref.blobs:
                await self.referrers.upload_monolithic(SCAN_CTX, repository,
                                                       str(blob_digest), _one(content))
            await self.referrers.put_manifest(SCAN_CTX, repository, str(ref.digest),
                                              ref.manifest, MANIFEST_MEDIA_TYPE, [])
        await self.scans.set_referrer(repository, digest, str(report.digest))

