"""Composition of registry notifications (called from app.py): the outbox sink that takes
every registry event for `notifications.endpoints[]`, and this worker's senders on the
background lifecycle (docs/notifications.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from stablemirror import __version__
from stablemirror.compose.background import Background
from stablemirror.config import Settings
from stablemirror.events.model import EventSink
from stablemirror.metrics import Metrics
from stablemirror.notifications.envelope import Source

if TYPE_CHECKING:  # SQLAlchemy (the outbox): imported with an endpoint (docs/footprint.md)
    from stablemirror.index.db import Database
    from stablemirror.notifications.delivery import Deliverer


@dataclass
class NotificationParts:
    sinks: list[EventSink] = field(default_factory=list)  # empty: no endpoint configured
    deliverer: Deliverer | None = None

    def schedule(self, background: Background) -> None:
        if self.deliverer is not None:
            background.run("notifications", self.deliverer.run)


def event_source(settings: Settings) -> Source:
    base_url = settings.notifications.base_url or f"http://{settings.listen}"
    return Source(base_url=base_url, host=urlsplit(base_url).netloc, addr=settings.listen,
                  instance_id=settings.replica)


def build_notifications(settings: Settings, db: Database | None, metrics: Metrics
                        ) -> NotificationParts:
    """`db`: SQLAlchemy's; None on a node's sqlite3 index, which has no endpoints."""
    cfg = settings.notifications
    if not cfg.endpoints:
        return NotificationParts()
    if db is None:
        raise ValueError("notifications.endpoints need database.backend sqlalchemy")
    from stablemirror.index.sql_notifications import SqlOutbox
    from stablemirror.notifications.delivery import Deliverer
    from stablemirror.notifications.outbox import OutboxSink

    outbox = SqlOutbox(db)
    deliverer = Deliverer(cfg, outbox, metrics, replica=settings.replica,
                          user_agent=f"stablemirror/{__version__}")
    sink = OutboxSink(cfg.endpoints, outbox, event_source(settings), metrics, deliverer.wake)
    return NotificationParts([sink], deliverer)
