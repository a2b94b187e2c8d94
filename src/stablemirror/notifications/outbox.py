"""The notification outbox as an EventSink: an accepted event is a row per matching
endpoint in the index before `accept` returns (docs/notifications.md, "Guarantees")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from fnmatch import fnmatchcase

from stablemirror.events.model import RegistryEvent
from stablemirror.index.sql_notifications import OutboxRow, SqlOutbox
from stablemirror.metrics import Metrics
from stablemirror.notifications.config import EndpointSettings
from stablemirror.notifications.envelope import Source, record_json

log = logging.getLogger("stablemirror.notifications")


def wants(endpoint: EndpointSettings, event: RegistryEvent) -> bool:
    """The endpoint's filters: its actions, repository globs, ignored media types."""
    if event.action not in endpoint.actions:
        return False
    if endpoint.repositories and not any(fnmatchcase(event.repository, glob)
                                         for glob in endpoint.repositories):
        return False
    return not (event.media_type and event.media_type in endpoint.ignore_media_types)


class OutboxSink:
    def __init__(self, endpoints: list[EndpointSettings], outbox: SqlOutbox, source: Source,
                 metrics: Metrics, wake: Callable[[str], None]) -> None:
        """`wake(endpoint)`: tell this process's sender of the endpoint there is work, so
        it does not wait for its next poll."""
        self.endpoints = endpoints
        self.outbox = outbox
        self.source = source
        self.metrics = metrics
        self.wake = wake
        self.caps = {e.name: e.max_pending for e in endpoints}

    async def accept(self, event: RegistryEvent) -> None:
        names = [e.name for e in self.endpoints if wants(e, event)]
        if not names:
            return
        body = record_json(event, self.source)
        dropped = await self.outbox.enqueue(
            [OutboxRow(name, event.id, body) for name in names], self.caps)
        for name, n in dropped.items():
            self.metrics.notification_dropped(name, n)
            log.warning("notifications endpoint %s: %d undelivered events dropped "
                        "(max_pending %d reached)", name, n, self.caps[name])
        for name in names:
            self.wake(name)
