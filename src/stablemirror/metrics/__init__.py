"""Every Prometheus metric stablemirror exports, declared here and nowhere else.

`Metrics` owns its metric objects on a private `CollectorRegistry` (never the library's global
one) and is created once per process by the composition root, then passed down: handlers get
it through an aiohttp `AppKey`, services through their constructors. Callers use the small
methods below rather than the metric objects, so every label value is checked against a
bounded set: no digests, user names or free-form strings ever become label values.

Several worker processes (server/prefork.py) use prometheus_client's multiprocess mode: each process
writes its values to memory-mapped files in one directory (never on the data
filesystem: server/metrics_dir.py), and a scrape in any worker merges
them all (`MultiProcessCollector`). `--workers 1` runs the same way, so the output does not
depend on the worker count. docs/metrics.md lists every series and who updates it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from stablemirror.metrics.labels import (
    CACHE_RESULTS,
    DURATION_BUCKETS,
    FOUND_BY,
    HTTP_METHODS,
    INVALID,
    KINDS,
    MAX_RELEASE_SERIES,
    NAMESPACE,
    OTHER,
    PREFIX,
    REASONS,
    REPLICA_ROLES,
    SCRUB_RESULTS,
    SIGNATURE_RESULTS,
    SOURCES,
    UPSTREAM_BUCKETS,
    UPSTREAM_RESULTS,
    CacheResult,
    ChunkOutcome,
    DeltaFallback,
    FailureReason,
    FoundBy,
    Kind,
    S3Direction,
    S3Operation,
    ScanBlock,
    ScanCategory,
    ScanResult,
    ScrubResult,
    SignatureResult,
    Source,
    TierName,
    UpstreamResult,
    check,
    config_name,
)
from stablemirror.metrics.notifications import NotificationMetrics
from stablemirror.metrics.p2p import P2PMetrics
from stablemirror.metrics.replication import ReplicationMetrics
from stablemirror.metrics.storage import StorageMetrics

# Callers import names from here; the label sets live in labels.py.
__all__ = [
    "CACHE_RESULTS", "CONTENT_TYPE", "DURATION_BUCKETS", "FOUND_BY", "HTTP_METHODS", "INVALID",
    "KINDS", "MAX_RELEASE_SERIES", "MULTIPROC_ENV", "NAMESPACE", "OTHER", "PREFIX", "REASONS",
    "REPLICA_ROLES", "SCRUB_RESULTS", "SIGNATURE_RESULTS", "SOURCES", "UPSTREAM_BUCKETS",
    "UPSTREAM_RESULTS", "CacheResult", "ChunkOutcome", "DeltaFallback", "FailureReason",
    "FoundBy", "Kind", "Metrics", "S3Direction", "S3Operation", "ScanBlock", "ScanCategory",
    "ScanResult", "ScrubResult", "SignatureResult", "Source", "TierName", "UpstreamHealth",
    "UpstreamResult", "prepare_multiprocess_dir",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

def prepare_multiprocess_dir(path: Path, *, clean: bool) -> Path:
    """Point prometheus_client at `path` for this process and the workers it forks.

    `clean` removes values left in it. A server's directory is its own (server/metrics_dir.py),
    so counters restart from zero with the server, as Prometheus expects. Must run before
    any `Metrics(multiprocess_dir=...)`.
    """
    path.mkdir(parents=True, exist_ok=True)
    if clean:
        for f in path.glob("*.db"):
            f.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client chooses memory-mapped values from the environment when it is first
    # imported, which may be before we knew the directory: ask it again.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    upstream: str
    up: bool | None
    requests: dict[str, float]
    mean_latency_seconds: float | None


class _Exported(Collector):
    """What a scrape sees: the merged values, plus HELP/TYPE for families with no sample yet,
    so every declared family is visible (and greppable) before it is first used."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for family in self._metrics.families():
            seen.add(family.name)
            yield family
        for declared in self._metrics.declared():
            for family in declared.describe():
                if family.name not in seen:
                    yield family


class Metrics(StorageMetrics, ReplicationMetrics, NotificationMetrics, P2PMetrics):
    def __init__(self, multiprocess_dir: Path | None = None, max_namespaces: int = 100) -> None:
        if multiprocess_dir is not None and os.environ.get(MULTIPROC_ENV) != str(
                multiprocess_dir):
            raise RuntimeError("call prepare_multiprocess_dir() before creating Metrics")
        self._multiprocess_dir = multiprocess_dir
        self._max_namespaces = max_namespaces
        self._namespaces: set[str] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._registry = CollectorRegistry(auto_describe=False)
        r = self._registry
        self._declare_storage(r)
        self._declare_replication(r)
        self._declare_notifications(r)
        self._declare_p2p(r)
        self.http_requests = Counter(
            f"{PREFIX}http_requests_total", "HTTP requests answered, by route and status.",
            ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(
            f"{PREFIX}http_request_duration_seconds",
            "Time from request to the last byte of the response, body included.",
            ["method", "route"], buckets=DURATION_BUCKETS, registry=r)
        self.pulls = Counter(
            f"{PREFIX}pulls_total", "Manifest and blob GETs, whatever their outcome.",
            ["kind", "namespace"], registry=r)
        self.pull_failures = Counter(
            f"{PREFIX}pull_failures_total", "Manifest and blob GETs that failed, by reason.",
            ["kind", "namespace", "reason"], registry=r)
        self.bytes_served = Counter(
            f"{PREFIX}blob_bytes_served_total", "Blob bytes delivered to clients, by origin.",
            ["source"], registry=r)
        self.cache_requests = Counter(
            f"{PREFIX}cache_requests_total", "Mirror cache lookups, by result.",
            ["result"], registry=r)
        self.upstream_requests = Counter(
            f"{PREFIX}upstream_requests_total", "Requests to upstream registries, by result.",
            ["upstream", "result"], registry=r)
        self.upstream_up = Gauge(
            f"{PREFIX}upstream_up", "1 if the upstream is considered healthy, 0 if down.",
            ["upstream"], multiprocess_mode="livemin", registry=r)
        self.upstream_latency = Histogram(
            f"{PREFIX}upstream_latency_seconds", "Upstream time to response headers.",
            ["upstream"], buckets=UPSTREAM_BUCKETS, registry=r)
        self.failovers = Counter(
            f"{PREFIX}upstream_failovers_total",
            "Requests retried on another upstream after one failed.", registry=r)
        self.gc_freed = Counter(
            f"{PREFIX}gc_freed_bytes_total", "Bytes garbage collection removed.", registry=r)
        # Integrity and trust (trust/enforce.py, integrity/scrub.py, integrity/reads.py).
        self.signature_checks = Counter(
            f"{PREFIX}signature_checks_total",
            "Manifest GETs checked against a trust policy, by outcome.", ["result"], registry=r)
        self.scrub_blobs = Counter(
            f"{PREFIX}scrub_blobs_total", "Blobs re-hashed by scrub, by outcome.",
            ["result"], registry=r)
        self.quarantined = Counter(
            f"{PREFIX}blobs_quarantined_total",
            "Blobs moved to quarantine after failing verification, by who found them.",
            ["found_by"], registry=r)
        self.healed = Counter(
            f"{PREFIX}blobs_healed_total",
            "Quarantined or missing blobs fetched again and verified.", registry=r)
        # Release channels (releases/service.py): resolutions of a channel tag and pulls of a
        # version tag. Channel and version are tag-grammar strings, bounded per process.
        self.release_pulls = Counter(
            f"{PREFIX}release_pulls_total",
            "Channel resolutions and version-tag pulls, by channel and version.",
            ["repository", "channel", "version"], registry=r)
        self._release_series: set[tuple[str, str, str]] = set()
        # Scanning (scanning/jobs.py, scanning/enforce.py).
        self.scans = Counter(f"{PREFIX}scans_total", "Manifest scans finished, by outcome.",
                             ["result"], registry=r)
        self.scan_findings = Counter(f"{PREFIX}scan_findings_total",
                                     "Findings of finished scans, by category.", ["category"],
                                     registry=r)
        self.scan_bytes = Counter(f"{PREFIX}scan_bytes_total",
                                  "Sizes of the blobs the model-file analyzers analyzed.",
                                  registry=r)
        self.scan_pulls = Counter(
            f"{PREFIX}scan_blocked_pulls_total",
            "Manifest GETs refused (or served under warn) by a scanning policy, by reason.",
            ["reason"], registry=r)
        for scan_result in get_args(ScanResult):
            self.scans.labels(scan_result)
        for block in get_args(ScanBlock):
            self.scan_pulls.labels(block)
        # Bounded label sets start at zero, so ratios and rate() work from the first scrape.
        for result in get_args(SignatureResult):
            self.signature_checks.labels(result)
        for result in get_args(ScrubResult):
            self.scrub_blobs.labels(result)
        for found_by in get_args(FoundBy):
            self.quarantined.labels(found_by)
        for result in get_args(CacheResult):
            self.cache_requests.labels(result)
        for source in get_args(Source):
            self.bytes_served.labels(source)

    # -- what the HTTP layer records ---------------------------------------------------------
    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "other"
        self._child(self.http_requests, method, route, str(status)).inc()
        self._child(self.http_duration, method, route).observe(seconds)

    def namespace(self, repository: str) -> str:
        """The bounded `namespace` label of a repository (or namespace) name."""
        first = repository.split("/", 1)[0]
        if not NAMESPACE.match(first):
            return INVALID
        if first not in self._namespaces:
            # Names come from clients; past the bound they share one label value.
            if len(self._namespaces) >= self._max_namespaces:
                return OTHER
            self._namespaces.add(first)
        return first

    def pull(self, kind: Kind, repository: str) -> None:
        """A manifest or blob GET was received (call once per GET, success or not)."""
        self._child(self.pulls, check(kind, KINDS, "kind"), self.namespace(repository)).inc()

    def pull_failure(self, kind: Kind, repository: str, reason: FailureReason) -> None:
        self.pull_failures.labels(check(kind, KINDS, "kind"), self.namespace(repository),
                                  check(reason, REASONS, "reason")).inc()

    def blob_bytes_served(self, source: Source, n: int) -> None:
        if n > 0:
            self._child(self.bytes_served, check(source, SOURCES, "source")).inc(n)

    # -- what the mirror records ------------------------------------------------------------------
    def cache(self, result: CacheResult) -> None:
        self.cache_requests.labels(check(result, CACHE_RESULTS, "cache result")).inc()

    def upstream_request(self, upstream: str, result: UpstreamResult,
                         seconds: float | None = None) -> None:
        """One request to `upstream` (its configured name); `seconds` to response headers."""
        name = config_name(upstream)
        self.upstream_requests.labels(name, check(result, UPSTREAM_RESULTS, "result")).inc()
        if seconds is not None:
            self.upstream_latency.labels(name).observe(seconds)

    def set_upstream_up(self, upstream: str, up: bool) -> None:
        self.upstream_up.labels(config_name(upstream)).set(1 if up else 0)

    def failover(self) -> None:
        self.failovers.inc()

    # -- storage, GC -------------------------------------------------------------------------
    def gc_freed_bytes(self, n: int) -> None:
        if n > 0:
            self.gc_freed.inc(n)


    # -- integrity and trust -------------------------------------------------------------------
    def signature_check(self, result: SignatureResult) -> None:
        self.signature_checks.labels(check(result, SIGNATURE_RESULTS, "result")).inc()

    def scrub_blob(self, result: ScrubResult) -> None:
        self.scrub_blobs.labels(check(result, SCRUB_RESULTS, "result")).inc()

    def blob_quarantined(self, found_by: FoundBy) -> None:
        self.quarantined.labels(check(found_by, FOUND_BY, "found_by")).inc()

    def blob_healed(self) -> None:
        self.healed.inc()

    # -- scanning --------------------------------------------------------------------------
    def scan_finished(self, result: ScanResult, categories: Iterable[ScanCategory]) -> None:
        self.scans.labels(check(result, frozenset(get_args(ScanResult)), "result")).inc()
        for category in categories:
            self.scan_findings.labels(
                check(category, frozenset(get_args(ScanCategory)), "category")).inc()

    def scan_read(self, n: int) -> None:
        self.scan_bytes.inc(n)

    def scan_pull_blocked(self, reason: ScanBlock) -> None:
        self.scan_pulls.labels(check(reason, frozenset(get_args(ScanBlock)), "reason")).inc()

    # -- release channels ----------------------------------------------------------------------
    def release_pull(self, repository: str, channel: str, version: str) -> None:
        """A channel tag resolved to `version` (channel "none": the version tag itself).
        Repositories, channels and versions exist only once pushed or promoted, and the
        series are capped per process; past the cap they share `_other`."""
        key = (repository[:255], channel[:128], version[:128])
        if key not in self._release_series:
            if len(self._release_series) >= MAX_RELEASE_SERIES:
                key = (OTHER, OTHER, OTHER)
            else:
                self._release_series.add(key)
        self._child(self.release_pulls, *key).inc()

    # -- reading back -----------------------------------------------------------------------
    def declared(self) -> Iterable[Counter | Gauge | Histogram]:
        return [m for m in vars(self).values() if isinstance(m, Counter | Gauge | Histogram)]

    def families(self) -> Iterator[Metric]:
        """Current values merged across every worker process."""
        if self._multiprocess_dir is not None:
            collector = MultiProcessCollector(  # type: ignore[no-untyped-call]
                None, str(self._multiprocess_dir))
            yield from collector.collect()  # type: ignore[no-untyped-call]
            return
        for family in self._registry.collect():
            # Single-process values carry `_created` samples that multiprocess mode has not;
            # drop them so both modes export the same series.
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family

    def render(self) -> bytes:
        """The Prometheus text exposition of every family."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Exported(self))
        return generate_latest(registry)

    def sample_names(self) -> set[str]:
        """Every series name a scrape can contain (for dashboards and alert checks)."""
        names: set[str] = set()
        for metric in self.declared():
            for family in metric.describe():
                suffixes = {"counter": ("_total",), "gauge": ("",),
                            "histogram": ("_bucket", "_sum", "_count")}[family.type]
                names.update(family.name + s for s in suffixes)
        return names

    def upstream_health(self) -> list[UpstreamHealth]:
        up: dict[str, bool] = {}
        requests: dict[str, dict[str, float]] = {}
        latency: dict[str, list[float]] = {}
        for family in self.families():
            for s in family.samples:
                name = s.labels.get("upstream")
                if name is None:
                    continue
                if s.name == f"{PREFIX}upstream_up":
                    up[name] = s.value >= 1
                elif s.name == f"{PREFIX}upstream_requests_total":
                    requests.setdefault(name, {})[s.labels["result"]] = s.value
                elif s.name == f"{PREFIX}upstream_latency_seconds_sum":
                    latency.setdefault(name, [0.0, 0.0])[0] = s.value
                elif s.name == f"{PREFIX}upstream_latency_seconds_count":
                    latency.setdefault(name, [0.0, 0.0])[1] = s.value
        names = sorted(set(up) | set(requests) | set(latency))
        return [UpstreamHealth(n, up.get(n), requests.get(n, {}),
                               latency[n][0] / latency[n][1]
                               if n in latency and latency[n][1] else None)
                for n in names]
