"""Release channels (releases/): channel pointers, their append-only history, pull counts
per version, and a mirror's per-identity channel resolutions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from stablemirror.index.schema import DIGEST, metadata

# A channel: a mutable pointer at a weighted set of versions (JSON list of
# {version, digest, weight}); readable as a tag of the repository.
release_channels = Table(
    "release_channels", metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("entries", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(255), nullable=False),
)

# Every move of a channel, never updated or deleted: who, when, from, to, why.
release_history = Table(
    "release_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           nullable=False),
    Column("channel", String(128), nullable=False),
    Column("time", Float, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(16), nullable=False),  # promote | split | rollback | rollback_to
    Column("from_entries", Text, nullable=False),
    Column("to_entries", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("forced", Boolean, nullable=False),
    Index("ix_release_history_channel", "repo_id", "channel", "id"),
)

# Pulls of each version (directly or through a channel), flushed in batches.
release_pulls = Table(
    "release_pulls", metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           primary_key=True),
    Column("version", String(128), primary_key=True),
    Column("pulls", BigInteger, nullable=False),
    Column("last_pulled_at", Float, nullable=False),
)

# A mirror's view of an upstream channel tag: which digest each identity it served got,
# for stale-if-error only (channel tags are revalidated on every pull).
mirror_channel_resolutions = Table(
    "mirror_channel_resolutions", metadata,
    Column("repository", String(255), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("identity", String(255), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("resolved_at", Float, nullable=False),
)
