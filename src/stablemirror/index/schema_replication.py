"""Replication status, one row per rule (index/sql_replication.py; docs/replication.md)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, String, Table, Text

from stablemirror.index.schema import metadata

# Written by whichever replica runs the rule's job, read by `replicate status` anywhere.
# `current` is a JSON list of the transfers in flight ({repository, tag, done, total}).
replication_status = Table(
    "replication_status", metadata,
    Column("rule", String(255), primary_key=True),
    Column("last_started", Float, nullable=True),
    Column("last_finished", Float, nullable=True),
    Column("last_success", Float, nullable=True),  # start time of the last run that succeeded
    Column("last_error", Text, nullable=True),
    Column("last_trigger", String(16), nullable=True),  # cron, manual, event
    Column("artifacts_copied", BigInteger, nullable=False, default=0),
    Column("bytes_copied", BigInteger, nullable=False, default=0),
    Column("pending_artifacts", BigInteger, nullable=False, default=0),
    Column("pending_bytes", BigInteger, nullable=False, default=0),
    Column("oldest_pending", Float, nullable=True),  # time of the oldest change not copied
    Column("current", Text, nullable=False, default="[]"),
    Column("updated_at", Float, nullable=False),
)
