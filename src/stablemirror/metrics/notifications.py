"""Metrics of registry notifications, per endpoint (a part of `Metrics`,
metrics/__init__.py; docs/notifications.md). Endpoint names come from configuration."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from stablemirror.metrics.labels import PREFIX, config_name


class NotificationMetrics:
    def _declare_notifications(self, r: CollectorRegistry) -> None:
        self.notifications_pending = Gauge(
            f"{PREFIX}notifications_pending", "Events not yet delivered to the endpoint.",
            ["endpoint"], multiprocess_mode="mostrecent", registry=r)
        self.notifications_oldest_age = Gauge(
            f"{PREFIX}notifications_oldest_pending_age_seconds",
            "Age of the endpoint's oldest undelivered event; 0 when none is pending.",
            ["endpoint"], multiprocess_mode="mostrecent", registry=r)
        self.notifications_delivered = Counter(
            f"{PREFIX}notifications_delivered_total",
            "Events the endpoint acknowledged with a 2xx.", ["endpoint"], registry=r)
        self.notifications_failed = Counter(
            f"{PREFIX}notifications_failed_attempts_total",
            "Delivery requests to the endpoint that failed (retried after a backoff).",
            ["endpoint"], registry=r)
        self.notifications_dropped = Counter(
            f"{PREFIX}notifications_dropped_total",
            "Undelivered events dropped because the endpoint's queue reached max_pending.",
            ["endpoint"], registry=r)

    def notification_endpoint(self, endpoint: str) -> None:
        """Make the endpoint's series visible at zero from start-up."""
        name = config_name(endpoint)
        for metric in (self.notifications_delivered, self.notifications_failed,
                       self.notifications_dropped):
            metric.labels(name)

    def notifications_queued(self, endpoint: str, pending: int, oldest_age: float) -> None:
        name = config_name(endpoint)
        self.notifications_pending.labels(name).set(pending)
        self.notifications_oldest_age.labels(name).set(oldest_age)

    def notification_delivered(self, endpoint: str, n: int) -> None:
        self.notifications_delivered.labels(config_name(endpoint)).inc(n)

    def notification_failed(self, endpoint: str) -> None:
        self.notifications_failed.labels(config_name(endpoint)).inc()

    def notification_dropped(self, endpoint: str, n: int) -> None:
        self.notifications_dropped.labels(config_name(endpoint)).inc(n)
