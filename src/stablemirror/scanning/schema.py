"""Scan tables (migration 0006): results per blob (cached by digest) and per manifest
in a repository (pending, done, failed), plus signed exemptions."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, String, Table, Text

from stablemirror.index.schema import DIGEST, metadata

# One analysis of one blob's bytes by one analyzer version: findings as JSON.
scan_blobs = Table(
    "scan_blobs", metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("analyzer", String(32), primary_key=True),
    Column("name", Text, nullable=False),  # the file name the findings were reported under
    Column("findings", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("scanned_at", Float, nullable=False),
)

# The scan of a manifest as served from one repository.
scan_manifests = Table(
    "scan_manifests", metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("status", String(16), nullable=False),  # pending | done | failed
    Column("analyzer", String(32), nullable=False),
    Column("findings", Text, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("claimed_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("referrer", DIGEST, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_scan_manifests_status", "status"),
)

# A signed decision to serve a manifest despite its findings.
scan_exemptions = Table(
    "scan_exemptions", metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("document", Text, nullable=False),  # the signed JSON, verified on every load
    Column("signature", Text, nullable=False),
    Column("key_id", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)
