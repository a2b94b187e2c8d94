"""Metrics of replication rules (a part of `Metrics`, metrics/__init__.py); the rule label
is a configured rule name (docs/replication.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from stablemirror.metrics.labels import PREFIX, config_name


class ReplicationMetrics:
    def _declare_replication(self, r: CollectorRegistry) -> None:
        self.replication_lag = Gauge(
            f"{PREFIX}replication_lag_seconds",
            "Age of the oldest change a replication rule has not copied yet.",
            ["rule"], multiprocess_mode="mostrecent", registry=r)
        self.replication_bytes = Counter(
            f"{PREFIX}replication_bytes_total",
            "Blob bytes a replication rule uploaded to its destination.", ["rule"],
            registry=r)
        self.replication_artifacts = Counter(
            f"{PREFIX}replication_artifacts_total",
            "Tags and digests a replication rule copied (changed at the destination).",
            ["rule"], registry=r)
        self.replication_failures = Counter(
            f"{PREFIX}replication_failures_total",
            "Replication runs (whole rule or one event) that failed.", ["rule"], registry=r)

    def declare_replication_rule(self, rule: str) -> None:
        """Series at zero for a configured rule, so rate() and alerts see it at once."""
        name = config_name(rule)
        self.replication_lag.labels(name)
        self.replication_bytes.labels(name)
        self.replication_artifacts.labels(name)
        self.replication_failures.labels(name)

    def replication_copied(self, rule: str, artifacts: int, n: int) -> None:
        name = config_name(rule)
        if artifacts:
            self.replication_artifacts.labels(name).inc(artifacts)
        if n:
            self.replication_bytes.labels(name).inc(n)

    def replication_failure(self, rule: str) -> None:
        self.replication_failures.labels(config_name(rule)).inc()

    def set_replication_lag(self, rule: str, seconds: float) -> None:
        self.replication_lag.labels(config_name(rule)).set(max(0.0, seconds))
