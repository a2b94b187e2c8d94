"""The hot tier over whatever blob store is configured (store/tiered.py, docs/storage.md):
on when `storage.hot.path` is set."""

from __future__ import annotations

from stablemirror.config import Settings
from stablemirror.metrics import Metrics
from stablemirror.store.protocol import BlobStore
from stablemirror.store.tiered import TieredBlobStore


def with_hot_tier(cold: BlobStore, settings: Settings, metrics: Metrics | None
                  ) -> BlobStore | TieredBlobStore:
    hot = settings.storage.hot
    if hot.path is None:
        return cold
    return TieredBlobStore(cold, hot.path, hot, metrics)
