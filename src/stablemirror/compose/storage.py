"""The blob store the settings name (`storage.backend`), built in one place."""

from __future__ import annotations

from typing import Any

from stablemirror.config import Settings
from stablemirror.metrics import Metrics
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.protocol import BlobStore
from stablemirror.store.s3 import S3BlobStore


def build_store(settings: Settings, metrics: Metrics | None = None) -> BlobStore:
    if settings.storage.backend == "s3":
        return S3BlobStore(settings.storage.s3, metrics)
    return FilesystemBlobStore(settings.data_dir)


def readiness_checks(store: BlobStore) -> dict[str, Any]:
    """HealthService arguments: the data-dir push directories, or the bucket for S3."""
    if isinstance(store, S3BlobStore):
        return {"push_dirs": (), "probes": {"s3": store.probe}}
    return {}
