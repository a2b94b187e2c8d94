"""Tables of access control and audit, on the shared index `metadata`.

Migration 0002_auth creates them; keep both in step.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from stablemirror.index.schema import metadata

# Local users and robot accounts. Federated (OIDC) users have no row: their IdP vouches.
auth_principals = Table(
    "auth_principals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # "user" | "robot"
    Column("name", String(64), nullable=False),
    Column("secret_hash", Text),  # argon2 (users) or sha256 (robots' random secrets)
    Column("tags", Text, nullable=False),  # JSON object
    Column("groups", Text, nullable=False),  # JSON list
    Column("description", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(255), nullable=False),
    UniqueConstraint("kind", "name", name="uq_auth_principals_kind_name"),
)

# Role bindings: a role for a user, robot or group on a repository pattern.
auth_bindings = Table(
    "auth_bindings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("principal_kind", String(8), nullable=False),  # "user" | "robot" | "group"
    Column("principal", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("pattern", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("principal_kind", "principal", "role", "pattern",
                     name="uq_auth_bindings"),
)

auth_policies = Table(
    "auth_policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Token signing keys (ES256). The newest unretired key signs; every unretired key is
# published in the JWKS so tokens signed before a rotation stay verifiable.
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_pem", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("retired_at", Float),
)

# One row (id=1): bumped by every change to principals, bindings, policies or keys, so each
# worker process reloads its cached policy set or key ring only when something changed.
auth_state = Table(
    "auth_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
)

# The hash chain. `seq` is assigned from audit_head under its lock, never by autoincrement,
# so the order is the chain's order on every database.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", Float, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("client", String(64), nullable=False),
    Column("user_agent", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("reference", String(255), nullable=False),
    Column("digest", String(160), nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_time", "time"),
)

# One row (id=1): the last seq and hash. Appending locks it (FOR UPDATE on PostgreSQL;
# SQLite's single writer does the same), which serializes the chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Signed checkpoints left by retention: the pruned prefix's last seq and hash.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payload", Text, nullable=False),  # canonical JSON, what the signature covers
    Column("signature", Text, nullable=False),  # base64 Ed25519
    Column("key_id", String(64), nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)
