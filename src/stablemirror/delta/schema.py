"""Delta tables (migration 0007): where chunks of local blobs are, and which weight layers
belong to which manifest (so a blob miss knows where to look for its chunk index)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, LargeBinary, String, Table

from stablemirror.index.schema import DIGEST, metadata

# One row per chunk of a local blob: the bytes of chunk `hash` are at `offset` in `digest`.
# `params` names the chunking (format.ChunkParams.key): only equal chunkings share hashes.
delta_chunks = Table(
    "delta_chunks", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("length", Integer, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("params", String(64), nullable=False),
    Index("ix_delta_chunks_hash", "hash"),
)

# Blobs whose chunks are in delta_chunks (or were found not worth indexing).
delta_indexed = Table(
    "delta_indexed", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("params", String(64), nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("indexed_at", Float, nullable=False),
)

# A weight layer seen in a manifest that passed through the mirror: its chunk index is a
# referrer of that manifest, in that repository upstream.
delta_layers = Table(
    "delta_layers", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("repository", String(255), nullable=False),
    Column("manifest", DIGEST, nullable=False),
    Column("manifest_media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("seen_at", Float, nullable=False),
)
