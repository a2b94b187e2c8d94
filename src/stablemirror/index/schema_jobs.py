"""The persistent job queue (index/sql_jobs.py; docs/jobs.md)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from stablemirror.index.schema import metadata

# One row per job. `dedup_key` is unique: a periodic job's slot (kind + period) is inserted
# once however many replicas try. `pinned_to` names the only replica that may run a job
# that is per host by nature (its local cache, its audit destination); NULL = any replica.
jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(8), nullable=False),  # queued running done failed dead
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", Float, nullable=False),
    Column("pinned_to", String(255), nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("dedup_key", String(255), nullable=True, unique=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_jobs_state_run_at", "state", "run_at"),
    Index("ix_jobs_kind_state", "kind", "state"),
)
