"""The blob store the settings name (`storage.backend`), built in one place; with
`storage.hot.path` set, the hot tier in front of it (store/tiered.py). The S3 store (and
its botocore, ~10 MiB) is imported only when named (docs/footprint.md)."""

from __future__ import annotations

from typing import Any

from stablemirror.config import Settings
from stablemirror.metrics import Metrics
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.protocol import BlobStore
from stablemirror.store.tiered import TieredBlobStore


def build_store(settings: Settings, metrics: Metrics | None = None) -> BlobStore:
    if settings.storage.backend == "s3":
        from stablemirror.store.s3 import S3BlobStore

        store: BlobStore = S3BlobStore(settings.storage.s3, metrics)
    else:
        store = FilesystemBlobStore(settings.data_dir)
    hot = settings.storage.hot
    if hot.path is not None:  # GC, quarantine and mirror evictions take hot copies along
        return TieredBlobStore(store, hot.path, hot, metrics)
    return store


def cold_of(store: BlobStore) -> BlobStore:
    """The store beneath the hot tier (what readers of local files of *every* blob need,
    e.g. the push indexer), or the store itself."""
    return store.cold if isinstance(store, TieredBlobStore) else store


def readiness_checks(store: BlobStore) -> dict[str, Any]:
    """HealthService arguments: the data-dir push directories, or the bucket for S3."""
    cold = cold_of(store)
    if isinstance(cold, FilesystemBlobStore):
        return {}
    from stablemirror.store.s3 import S3BlobStore

    if isinstance(cold, S3BlobStore):
        return {"push_dirs": (), "probes": {"s3": cold.probe}}
    return {}
