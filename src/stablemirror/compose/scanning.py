"""Composition of scanning (called from app.py, the composition root).

    ScanningRegistry  (scan results decide manifest GETs; pushes start scans)
      -> the trust-enforced registry (trust/enforce.py, compose_trust.py)
scans read through `backend` (below trust, so an unsigned image can still be scanned) and
push their reports into `hosted` (the local index, for proxied repositories too).
Nothing is wrapped when no scanning policy is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from stablemirror.config import Settings
from stablemirror.index.audit_events import AuditSink
from stablemirror.metrics import Metrics
from stablemirror.registry.protocol import RegistryService
from stablemirror.store.protocol import BlobStore

if TYPE_CHECKING:  # imported when a scanning policy is set (docs/footprint.md)
    from stablemirror.index.db import Database
    from stablemirror.scanning.jobs import ScanJobs


@dataclass
class ScanningParts:
    registry: RegistryService
    jobs: ScanJobs | None

    async def start(self, _app: web.Application) -> None:
        if self.jobs is not None:
            await self.jobs.start()

    async def stop(self, _app: web.Application) -> None:
        if self.jobs is not None:
            await self.jobs.stop()


def build_scanning(settings: Settings, front: RegistryService, backend: RegistryService,
                   hosted: RegistryService,
                   store: BlobStore, db: Database | None, metrics: Metrics,
                   audit: AuditSink | None = None
                   ) -> ScanningParts:
    scanning = settings.scanning
    if not scanning.policies:
        return ScanningParts(front, None)
    if db is None:  # a node's sqlite3 index (compose/index.py); config.py refuses this
        raise ValueError("scanning.policies need database.backend sqlalchemy")
    from stablemirror.scanning.enforce import ScanningRegistry
    from stablemirror.scanning.jobs import ScanJobs
    from stablemirror.scanning.policy import policy_from_settings
    from stablemirror.scanning.store import ScanStore
    from stablemirror.scanning.trivy import trivy_scanner
    from stablemirror.trust.policy import read_role_key

    scans = ScanStore(db)
    jobs = ScanJobs(backend, scans, store, settings.data_dir / "scanning" / "spool", metrics,
                    referrers=hosted, concurrency=scanning.concurrency)
    trivy = trivy_scanner(scanning.trivy, scanning.trivy_timeout_seconds, backend, store,
                          settings.data_dir / "scanning" / "spool",
                          scanning.trivy_db_repository)
    if trivy is not None:
        jobs.extra.append(trivy)
    keys = [read_role_key("exemption", spec).key for spec in scanning.exemption_keys]
    registry = ScanningRegistry(front, jobs, scans,
                                [policy_from_settings(p) for p in scanning.policies],
                                scanning.pending_wait_seconds, metrics, audit, keys)
    return ScanningParts(registry, jobs)
