"""Trivy for container images: a CycloneDX SBOM and a secret scan (no vulnerability
database needed); vulnerabilities when a database is reachable. Not wired yet: see
docs/scanning.md."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from stablemirror.scanning.findings import Finding
from stablemirror.services.protocol import RegistryService
from stablemirror.store.protocol import BlobStore

TrivyScanner = Callable[[str, str, str, bytes], Awaitable[list[Finding]]]


def find_trivy(configured: str | None) -> str | None:
    return configured or shutil.which("trivy")


def trivy_scanner(configured: str | None, timeout: float, registry: RegistryService,
                  store: BlobStore, spool_dir: Path) -> TrivyScanner | None:
    return None
