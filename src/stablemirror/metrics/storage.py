"""Metrics of where blobs live and how they move: storage tiers, the hot tier, S3 requests,
delta transfer, fetches across replicas (a part of `Metrics`, metrics/__init__.py)."""

from __future__ import annotations

from typing import Any, TypeVar, cast, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stablemirror.metrics.labels import (
    PREFIX,
    REPLICA_ROLES,
    ChunkOutcome,
    DeltaFallback,
    S3Direction,
    S3Operation,
    TierName,
    check,
    config_name,
)

_M = TypeVar("_M", Counter, Gauge, Histogram)


class StorageMetrics:
    _children: dict[tuple[int, tuple[str, ...]], Any]

    def _declare_storage(self, r: CollectorRegistry) -> None:
        self.replica_fetches = Counter(
            f"{PREFIX}replica_fetches_total",
            "Fetch leaders by role across replicas: owner (transferred from upstream), "
            "follower (streamed from the owning replica), fallback (owner unreachable).",
            ["role"], registry=r)
        self.storage_bytes = Gauge(
            f"{PREFIX}storage_bytes", "Bytes of blobs stored, by tier.",
            ["tier"], multiprocess_mode="mostrecent", registry=r)
        self.storage_capacity = Gauge(
            f"{PREFIX}storage_capacity_bytes",
            "Bytes the tier can hold: its blobs plus the space still free to it.",
            ["tier"], multiprocess_mode="mostrecent", registry=r)
        self.uploads = Gauge(
            f"{PREFIX}uploads_in_progress", "Open blob upload sessions.",
            multiprocess_mode="mostrecent", registry=r)
        # The hot tier (store/tiered.py); its size is storage_bytes{tier="hot"}.
        self.tier_hits = Counter(f"{PREFIX}tier_hits_total",
                                 "Blob reads, by the tier that answered them.", ["tier"],
                                 registry=r)
        self.tier_bytes = Counter(f"{PREFIX}tier_bytes_total",
                                  "Blob bytes read, by the tier that supplied them.", ["tier"],
                                  registry=r)
        self.tier_promotions = Counter(f"{PREFIX}tier_promotions_total",
                                       "Blobs copied, verified, into the hot tier.", registry=r)
        self.tier_demotions = Counter(f"{PREFIX}tier_demotions_total",
                                      "Hot copies evicted to make room.", registry=r)
        # Delta transfer (mirror/delta_source.py, delta/fetcher.py).
        self.delta_saved = Counter(
            f"{PREFIX}delta_bytes_saved_total",
            "Bytes of weight layers taken from local chunks instead of fetched upstream.",
            registry=r)
        self.delta_chunks = Counter(
            f"{PREFIX}delta_chunks_total",
            "Chunks of delta-fetched layers, reused locally or fetched (hit ratio).",
            ["outcome"], registry=r)
        self.delta_fallbacks = Counter(
            f"{PREFIX}delta_fallbacks_total",
            "Weight-layer fetches that went whole instead of by delta, by reason.",
            ["reason"], registry=r)
        for outcome in get_args(ChunkOutcome):
            self.delta_chunks.labels(outcome)
        for fallback in get_args(DeltaFallback):
            self.delta_fallbacks.labels(fallback)
        # The S3 blob store (store/s3_client.py): every API call, failures, body bytes.
        self.s3_requests = Counter(f"{PREFIX}s3_requests_total",
                                   "S3 API requests of the blob store, by operation.",
                                   ["operation"], registry=r)
        self.s3_errors = Counter(f"{PREFIX}s3_request_errors_total",
                                 "S3 API requests that failed (after retries), by operation.",
                                 ["operation"], registry=r)
        self.s3_bytes = Counter(f"{PREFIX}s3_bytes_total",
                                "Object bytes sent to or received from S3, by direction.",
                                ["direction"], registry=r)
        for op in get_args(S3Operation):
            self.s3_requests.labels(op)
            self.s3_errors.labels(op)
        for direction in get_args(S3Direction):
            self.s3_bytes.labels(direction)
        for tier in get_args(TierName):
            self.tier_hits.labels(tier)
            self.tier_bytes.labels(tier)

    def _child(self, metric: _M, *values: str) -> _M:
        # labels() validates and locks on every call; the hot per-request series are
        # looked up here instead (as bounded as the label values themselves).
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return cast(_M, child)

    def replica_fetch(self, role: str) -> None:
        self.replica_fetches.labels(check(role, REPLICA_ROLES, "replica fetch role")).inc()

    def set_storage(self, tier: str, used: int, capacity: int | None) -> None:
        name = config_name(tier)
        self.storage_bytes.labels(name).set(used)
        if capacity is not None:
            self.storage_capacity.labels(name).set(capacity)

    def set_uploads_in_progress(self, n: int) -> None:
        self.uploads.set(n)

    def tier_read(self, tier: TierName, n: int, hits: int = 1) -> None:
        if hits:
            self._child(self.tier_hits, tier).inc(hits)
        if n:
            self._child(self.tier_bytes, tier).inc(n)

    def tier_promoted(self) -> None:
        self.tier_promotions.inc()

    def tier_demoted(self, n: int) -> None:
        self.tier_demotions.inc(n)

    # -- delta transfer ----------------------------------------------------------------------
    def delta_done(self, reused_chunks: int, fetched_chunks: int, saved_bytes: int) -> None:
        self.delta_chunks.labels("reused").inc(reused_chunks)
        self.delta_chunks.labels("fetched").inc(fetched_chunks)
        self.delta_saved.inc(saved_bytes)

    def delta_fallback(self, reason: DeltaFallback) -> None:
        self.delta_fallbacks.labels(
            check(reason, frozenset(get_args(DeltaFallback)), "reason")).inc()

    # -- S3 blob store ------------------------------------------------------------------
    def s3_request(self, operation: S3Operation, failed: bool = False) -> None:
        self._child(self.s3_requests, operation).inc()
        if failed:
            self._child(self.s3_errors, operation).inc()

    def s3_transferred(self, direction: S3Direction, n: int) -> None:
        self._child(self.s3_bytes, direction).inc(n)
