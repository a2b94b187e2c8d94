"""Composition of the index (called from app.py): the registry index and the stores beside
it, on the backend the settings choose (`database.backend`, docs/footprint.md):

* sqlalchemy: SQLite or PostgreSQL through SQLAlchemy (index/db.py), every feature;
* sqlite3: the same SQLite file through the stdlib (index/lite_*.py, delta/lite_store.py),
  what a node's pull-through cache uses and nothing more; SQLAlchemy is never imported.

Each backend's modules are imported only when it is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stablemirror.config import IndexBackend, Settings
from stablemirror.delta.chunk_rows import ChunkStore
from stablemirror.index.job_queue import JobQueue
from stablemirror.index.mirror_rows import MirrorState
from stablemirror.index.protocol import RegistryIndex
from stablemirror.index.schema_fast import sqlite_file
from stablemirror.index.trust_rows import TrustIndex

if TYPE_CHECKING:
    from stablemirror.index.db import Database


@dataclass
class IndexParts:
    backend: IndexBackend
    index: RegistryIndex  # closing it closes the database under every part
    mirror: MirrorState
    chunks: ChunkStore
    trust: TrustIndex
    jobs: JobQueue
    # SQLAlchemy's database, for the parts only that backend implements (access control,
    # audit, releases of hosted namespaces, notifications, scanning, replication, replica
    # fetch leases); None on sqlite3, whose settings turn none of them on (config.py).
    db: Database | None


def build_index(settings: Settings) -> IndexParts:
    if settings.index_backend == "sqlite3":
        return _sqlite3_parts(settings)
    from stablemirror.index.db import Database

    return sqlalchemy_parts(settings, Database(settings.index_url, settings.db_pool))


def sqlalchemy_parts(settings: Settings, db: Database) -> IndexParts:
    from stablemirror.compose.jobs import job_queue
    from stablemirror.delta.store import ChunkTable
    from stablemirror.index.mirror_sql import MirrorIndex
    from stablemirror.index.sql import SqlIndex
    from stablemirror.index.sql_trust import SqlTrustIndex

    return IndexParts("sqlalchemy", SqlIndex(db), MirrorIndex(db), ChunkTable(db),
                      SqlTrustIndex(db), job_queue(settings, db), db)


def _sqlite3_parts(settings: Settings) -> IndexParts:
    from stablemirror.delta.lite_store import LiteChunkTable
    from stablemirror.index.lite_db import LiteDatabase
    from stablemirror.index.lite_index import LiteIndex
    from stablemirror.index.lite_jobs import LiteJobQueue
    from stablemirror.index.lite_mirror import LiteMirrorIndex
    from stablemirror.index.lite_trust import LiteTrustIndex

    path = sqlite_file(settings.index_url)
    if path is None:  # config.py refuses the sqlite3 backend for any other URL
        raise ValueError(f"the sqlite3 index backend needs an SQLite file, not "
                         f"{settings.index_url}")
    db = LiteDatabase(str(path))
    cfg = settings.jobs
    jobs = LiteJobQueue(db, max_attempts=cfg.max_attempts,
                        backoff_seconds=cfg.backoff_seconds,
                        backoff_max_seconds=cfg.backoff_max_seconds)
    return IndexParts("sqlite3", LiteIndex(db), LiteMirrorIndex(db), LiteChunkTable(db),
                      LiteTrustIndex(db), jobs, None)


def require_sqlalchemy(parts: IndexParts, feature: str) -> Database:
    """The SQLAlchemy database for `feature`; config.py keeps a settings mistake from
    getting here (`database.backend: sqlite3` with such a feature is one SettingsError)."""
    if parts.db is None:
        raise ValueError(f"{feature} needs database.backend sqlalchemy")
    return parts.db
