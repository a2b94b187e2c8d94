"""Health, readiness and status: what /healthz, /readyz, /status and /metrics report.

Readiness asks the index a real query and proves the data dir and the directories a push
writes to (blobs/, uploads/) take a new entry, each within a timeout, so a hung disk or
database answers "not ready" instead of hanging the probe, and an instance that would
refuse every push is not sent any.
Storage use comes from the index (the sum of blob sizes: no directory walk) and statvfs; it
is cached for a few seconds so scrapes and status calls cost one query at most.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stablemirror.index.protocol import RegistryIndex
from stablemirror.metrics import Metrics

LOCAL_TIER = "local"
# The directories under the data dir a push writes to (store/filesystem.py).
PUSH_DIRS = ("blobs", "uploads")
PROBE_PREFIX = ".ready-"


@dataclass(frozen=True, slots=True)
class StorageUsage:
    tier: str
    blobs: int
    blob_bytes: int
    uploads_in_progress: int
    free_bytes: int  # what this process may still write (statvfs f_bavail)
    filesystem_bytes: int  # the whole filesystem holding the data dir

    @property
    def capacity_bytes(self) -> int:
        # What our blobs could grow to: their size now plus the free space. Other files on
        # a shared disk shrink it, which is exactly what "nearly full" must notice.
        return self.blob_bytes + self.free_bytes


def _probe_writable(directory: Path) -> None:
    probe = directory / f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe.touch(exist_ok=False)
    probe.unlink()


def _probe_dir_writable(directory: Path) -> None:
    """A directory entry, not a file: blobs/ holds only directories and a listing racing
    the probe must not meet a file there (store/filesystem.py list_blobs)."""
    probe = directory / f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    probe.mkdir()
    probe.rmdir()


def _statvfs(directory: Path) -> tuple[int, int]:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class HealthService:
    def __init__(self, index: RegistryIndex, data_dir: Path, metrics: Metrics, *,
                 version: str, role: str, workers: int, probe_timeout: float = 3.0,
                 usage_ttl: float = 10.0, push_dirs: tuple[str, ...] = PUSH_DIRS,
                 probes: dict[str, Callable[[], Awaitable[object]]] | None = None) -> None:
        """`push_dirs`: the data-dir directories a push writes (none when blobs live in
        S3); `probes`: more readiness checks by name (the S3 bucket answers)."""
        self.push_dirs = push_dirs
        self.probes = probes or {}
        self.index = index
        self.data_dir = data_dir
        self.metrics = metrics
        self.version = version
        self.role = role
        self.workers = workers
        self.probe_timeout = probe_timeout
        self.usage_ttl = usage_ttl
        self.started = time.time()
        self._usage: StorageUsage | None = None
        self._usage_at = 0.0

    async def readiness(self) -> dict[str, str]:
        """Each check's result: "ok" or why it failed. Ready when all are "ok"."""
        checks = {"index": self._check(self.index.ping()),
                  "data_dir": self._check(asyncio.to_thread(_probe_writable, self.data_dir))}
        for name in self.push_dirs:
            checks[name] = self._check(asyncio.to_thread(_probe_dir_writable,
                                                         self.data_dir / name))
        for name, probe in self.probes.items():
            checks[name] = self._check(probe())
        results = await asyncio.gather(*checks.values())
        return dict(zip(checks, results, strict=True))

    async def _check(self, probe: Any) -> str:
        try:
            await asyncio.wait_for(probe, self.probe_timeout)
        except TimeoutError:
            return f"no answer within {self.probe_timeout:g}s"
        except OSError as exc:  # say what the disk said, not which Python class carried it
            path = str(exc.filename) if exc.filename is not None else ""
            if os.path.basename(path).startswith(PROBE_PREFIX):
                path = os.path.dirname(path)  # the directory that refused, not our probe
            return f"{exc.strerror or exc}{f': {path}' if path else ''}"
        except Exception as exc:  # any failure means "not ready"; the reason is the answer
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    async def storage(self) -> StorageUsage:
        now = time.monotonic()
        if self._usage is None or now - self._usage_at > self.usage_ttl:
            usage = await self.index.usage()
            free, total = await asyncio.to_thread(_statvfs, self.data_dir)
            self._usage = StorageUsage(LOCAL_TIER, usage.blobs, usage.blob_bytes,
                                       usage.uploads, free, total)
            self._usage_at = now
        return self._usage

    async def refresh_metrics(self) -> None:
        """Set the gauges a scrape reads; a failing index leaves their last values."""
        try:
            usage = await asyncio.wait_for(self.storage(), self.probe_timeout)
        except Exception:  # metrics must render even while the index is down
            return
        self.metrics.set_storage(usage.tier, usage.blob_bytes, usage.capacity_bytes)
        self.metrics.set_uploads_in_progress(usage.uploads_in_progress)

    async def status(self) -> dict[str, Any]:
        checks = await self.readiness()
        doc: dict[str, Any] = {
            "version": self.version,
            "role": self.role,
            "pid": os.getpid(),
            "workers": self.workers,
            "started_at": self.started,
            "uptime_seconds": round(time.time() - self.started, 3),
            "ready": all(v == "ok" for v in checks.values()),
            "checks": checks,
            "upstreams": [asdict(u) for u in self.metrics.upstream_health()],
        }
        try:
            usage = await asyncio.wait_for(self.storage(), self.probe_timeout)
            doc["storage"] = [{**asdict(usage), "capacity_bytes": usage.capacity_bytes}]
        except Exception as exc:  # status must answer even while the index is down
            doc["storage"] = []
            doc["storage_error"] = f"{type(exc).__name__}: {exc}"
        return doc
