"""Composition of the job queue (called from app.py): this worker's runner, and the jobs
that belong to no other room's composition (GC). docs/jobs.md lists every kind."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stablemirror.compose.background import Background
from stablemirror.compose.layout import DataDir
from stablemirror.config import Settings
from stablemirror.index.job_queue import JobQueue
from stablemirror.index.protocol import RegistryIndex
from stablemirror.jobs.runner import JobContext, JobRunner
from stablemirror.registry.gc import ChunkRows, GarbageCollector
from stablemirror.store.protocol import BlobStore

if TYPE_CHECKING:  # SQLAlchemy: not on a node's sqlite3 index (compose/index.py)
    from stablemirror.index.db import Database
    from stablemirror.index.sql_jobs import SqlJobQueue

log = logging.getLogger("stablemirror.gc")


def job_queue(settings: Settings, db: Database) -> SqlJobQueue:
    from stablemirror.index.sql_jobs import SqlJobQueue

    cfg = settings.jobs
    return SqlJobQueue(db, max_attempts=cfg.max_attempts, backoff_seconds=cfg.backoff_seconds,
                       backoff_max_seconds=cfg.backoff_max_seconds)


def build_runner(settings: Settings, queue: JobQueue) -> JobRunner:
    return JobRunner(queue, settings.jobs, settings.replica)


def schedule_gc(settings: Settings, background: Background, store: BlobStore,
                index: RegistryIndex, chunks: ChunkRows | None = None) -> None:
    """`gc.interval_seconds`: online GC (abandoned uploads and partial fetches too) as the
    periodic `gc` job, once across replicas: they share the index and the blob store."""
    cfg = settings.gc
    if cfg.interval_seconds <= 0:
        return
    collector = GarbageCollector(store, index, cfg.grace_seconds, cfg.upload_max_age_seconds,
                                 fetch_dir=DataDir(settings.data_dir).fetch, chunks=chunks)

    async def collect(_ctx: JobContext) -> None:
        report = await collector.run()
        if report.blobs_deleted or report.uploads_removed or report.orphan_files_deleted \
                or report.chunk_rows_swept:
            log.info("gc: %d blobs, %d orphan files, %d uploads removed, %d bytes freed, "
                     "chunk rows of %d blobs not stored forgotten", report.blobs_deleted,
                     report.orphan_files_deleted, report.uploads_removed, report.bytes_freed,
                     report.chunk_rows_swept)

    background.job("gc", cfg.interval_seconds, collect, first_now=False)
