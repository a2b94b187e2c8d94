"""Mirror state: tag freshness, the negative cache and blob access times (for eviction)."""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Integer, String, Table

from stablemirror.index.schema import DIGEST, metadata

# When a proxied tag was last confirmed upstream; survives restarts (stale-if-error).
mirror_tags = Table(
    "mirror_tags", metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"),
           primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("checked_at", Float, nullable=False),
)

# Upstream 404s remembered for a short while.
mirror_negative = Table(
    "mirror_negative", metadata,
    Column("repository", String(255), primary_key=True),
    Column("reference", String(160), primary_key=True),
    Column("expires_at", Float, nullable=False),
)

# Last time a proxied blob was served; LRU and inactive eviction read it.
blob_access = Table(
    "blob_access", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("last_access", Float, nullable=False),
)

# Which replica fetches a blob from upstream right now (mirror/replicas.py): one transfer
# per blob across replicas. `owner` is the replica's advertised URL; a row whose
# `expires_at` passed belongs to nobody and the next claimer takes it over.
fetch_leases = Table(
    "fetch_leases", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("owner", String(512), nullable=False),
    Column("expires_at", Float, nullable=False),
)
