"""Composition of release channels (called from app.py, the composition root).

    ReleaseService   channels, history, pull counts (releases/service.py)
      + ReleaseRegistry wrapping the registry service: channel tags, immutable versions
      + the release admin API, the pull-count flusher and the periodic retention job

On a node's sqlite3 index (compose/index.py) every repository is proxied, so no channel is
kept here: only tag listings that include the upstream channels it served
(releases/mirror_listing.py), and no release API. Those modules load SQLAlchemy, so they
are imported when built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from stablemirror.compose.background import Background
from stablemirror.config import Settings
from stablemirror.events.model import EventSink
from stablemirror.index.audit_events import AuditSink
from stablemirror.index.mirror_rows import ChannelTagStore
from stablemirror.index.protocol import RegistryIndex
from stablemirror.jobs.runner import JobContext
from stablemirror.metrics import Metrics
from stablemirror.registry.protocol import RegistryService, RequestContext
from stablemirror.releases.mirror_listing import MirrorChannelListing

if TYPE_CHECKING:
    from stablemirror.index.db import Database
    from stablemirror.releases.retention_job import Retention
    from stablemirror.releases.service import ReleaseService

log = logging.getLogger("stablemirror.releases")


@dataclass
class MirrorReleaseParts:
    """A node's: upstream channels in tag listings, nothing hosted (no API, no jobs)."""

    channels: ChannelTagStore

    def wrap(self, registry: RegistryService, _is_hosted: Callable[[str], bool]
             ) -> RegistryService:
        return MirrorChannelListing(registry, self.channels)

    def install(self, app: web.Application, interval: float, background: Background) -> None:
        return None


@dataclass
class ReleaseParts:
    service: ReleaseService
    retention: Retention

    def wrap(self, registry: RegistryService, is_hosted: Callable[[str], bool]
             ) -> RegistryService:
        from stablemirror.releases.registry import ReleaseRegistry

        self.service.is_hosted = is_hosted
        return ReleaseRegistry(registry, self.service, self.retention.index, is_hosted)

    def install(self, app: web.Application, interval: float, background: Background) -> None:
        from stablemirror.api.releases import RELEASES, RETENTION, add_release_routes

        app[RELEASES] = self.service
        app[RETENTION] = self.retention
        add_release_routes(app)

        async def start(_app: web.Application) -> None:
            await self.service.start()

        async def stop(_app: web.Application) -> None:
            await self.service.stop()  # before on_cleanup closes the database

        app.on_startup.append(start)
        app.on_shutdown.append(stop)
        if any(ns.retention.enabled for ns in self.service.settings.namespaces):
            background.job("releases.retention", interval, self._retention_once,
                           first_now=False)

    async def _retention_once(self, _ctx: JobContext) -> None:
        ctx = RequestContext(actor="retention", client="local", user_agent="stablemirror")
        removed = await self.retention.run(ctx, dry_run=False)
        if removed:
            log.info("retention removed %d versions", len(removed))


def build_releases(settings: Settings, db: Database | None, index: RegistryIndex,
                   channels: ChannelTagStore, metrics: Metrics, audit: AuditSink | None,
                   events: EventSink | None = None) -> ReleaseParts | MirrorReleaseParts:
    """`db`: SQLAlchemy's; None on a node's sqlite3 index (`channels` is its record of
    upstream channels, on the same index)."""
    if db is None:
        return MirrorReleaseParts(channels)
    from stablemirror.releases.retention_job import Retention
    from stablemirror.releases.service import ReleaseService

    service = ReleaseService(db, settings.releases, metrics, audit, events)
    return ReleaseParts(service, Retention(service, index))
