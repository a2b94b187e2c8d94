"""Tables of integrity and trust (migration 0003): signing policies, blob integrity, leases."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, String, Table, Text

from stablemirror.index.schema import DIGEST, metadata

# A policy per repository pattern (fnmatch); the most specific matching pattern applies.
trust_policies = Table(
    "trust_policies",
    metadata,
    Column("pattern", String(255), primary_key=True),
    Column("mode", String(8), nullable=False),  # enforce | warn | off
    Column("updated_at", Float, nullable=False),
)

# The public keys of each required role (a role is satisfied by any one of its keys).
trust_policy_keys = Table(
    "trust_policy_keys",
    metadata,
    Column("pattern", String(255),
           ForeignKey("trust_policies.pattern", ondelete="CASCADE"), primary_key=True),
    Column("role", String(64), primary_key=True),
    Column("key_id", String(80), primary_key=True),  # sha256 of the SubjectPublicKeyInfo
    Column("public_key", Text, nullable=False),  # PEM
    Column("label", String(255), nullable=False),  # where the key came from, for humans
)

# What scrub and verified reads know about each stored blob.
blob_integrity = Table(
    "blob_integrity",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("state", String(16), nullable=False),  # ok | quarantined
    Column("size", BigInteger),
    Column("verified_at", Float),  # last time its bytes hashed to its digest
    Column("stale_at", Float),  # verified reads before this time no longer count
    Column("quarantined_at", Float),
    Column("quarantine_path", Text),
    Column("detail", Text),
)

# Background work that one process of many should do at a time (the scrub worker).
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)
