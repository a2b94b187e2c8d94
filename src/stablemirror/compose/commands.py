"""What the commands other than `serve` need, composed here like the server is in app.py:
each opens what it builds and closes it again, so a command only asks and uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from stablemirror.audit.log import AuditLog
from stablemirror.auth.admin import AuthAdmin
from stablemirror.compose.auth import build_admin, build_audit, checkpoint_key_file
from stablemirror.compose.index import sqlalchemy_parts
from stablemirror.compose.jobs import job_queue
from stablemirror.compose.layout import DataDir
from stablemirror.compose.mirror import build_mirror
from stablemirror.compose.storage import build_store
from stablemirror.config import Settings
from stablemirror.delta.store import ChunkTable
from stablemirror.index.db import Database
from stablemirror.index.migrate import upgrade
from stablemirror.index.sql import SqlIndex
from stablemirror.index.sql_jobs import SqlJobQueue
from stablemirror.index.sql_trust import SqlTrustIndex
from stablemirror.integrity.scrub import Quarantine, Scrubber, ServiceHealer
from stablemirror.metrics import Metrics
from stablemirror.registry.gc import GarbageCollector
from stablemirror.registry.hosted import HostedRegistry


@asynccontextmanager
async def garbage_collector(settings: Settings, grace: float | None
                            ) -> AsyncIterator[GarbageCollector]:
    db = Database(settings.index_url)
    index = SqlIndex(db)
    store = build_store(settings)
    try:
        yield GarbageCollector(
            store, index,
            settings.gc.grace_seconds if grace is None else grace,
            settings.gc.upload_max_age_seconds, fetch_dir=DataDir(settings.data_dir).fetch,
            chunks=ChunkTable(db))
    finally:
        await index.close()
        await store.aclose()


@asynccontextmanager
async def scrubber(settings: Settings, budget: float) -> AsyncIterator[Scrubber]:
    """A scrubber that heals from the mirror's upstreams, and audits quarantines like the
    server does."""
    db = Database(settings.index_url)
    store = build_store(settings)
    parts = sqlalchemy_parts(settings, db)
    metrics = Metrics()
    mirror = build_mirror(settings, HostedRegistry(store, parts.index), store, parts, metrics)
    healer = ServiceHealer(mirror.registry, store) if mirror is not None else None
    try:
        if mirror is not None:
            await mirror.client.start()
        trust_index = parts.trust
        audit = build_audit(settings, db)
        quarantine = Quarantine(store, trust_index, metrics,
                                audit.record if audit is not None else None, healer)
        yield Scrubber(store, trust_index, quarantine, budget, metrics)
    finally:
        if mirror is not None:
            await mirror.fetches.aclose()
            await mirror.client.close()
        await store.aclose()
        await db.close()


def _open_index(settings: Settings) -> Database:
    """The index of a data dir a command administers, created and migrated if need be."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.index_url)
    return Database(settings.index_url)


@dataclass(frozen=True, slots=True)
class AdminParts:
    admin: AuthAdmin
    audit: AuditLog


@asynccontextmanager
async def administration(settings: Settings) -> AsyncIterator[AdminParts]:
    db = _open_index(settings)
    try:
        _store, _passwords, admin = build_admin(settings, db)
        yield AdminParts(admin, AuditLog(db, checkpoint_key_file(settings)))
    finally:
        await db.close()


@asynccontextmanager
async def trust_index(settings: Settings) -> AsyncIterator[SqlTrustIndex]:
    db = _open_index(settings)
    try:
        yield SqlTrustIndex(db)
    finally:
        await db.close()


@asynccontextmanager
async def job_queue_of(settings: Settings) -> AsyncIterator[SqlJobQueue]:
    """The index's job queue, for `stablemirror jobs` (reads it directly, any replica)."""
    db = Database(settings.index_url)
    try:
        yield job_queue(settings, db)
    finally:
        await db.close()
