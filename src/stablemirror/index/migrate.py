"""Bring an index database to the newest schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from stablemirror.index.db import sqlite_engine

MIGRATIONS = Path(__file__).parent / "migrations"
# Replicas starting together each migrate the shared PostgreSQL index: one at a time, under
# a transaction-scoped advisory lock (the others then find it at head). SQLite's
# BEGIN IMMEDIATE serializes them already.
MIGRATION_LOCK = 0x736D6967  # "smig"


def upgrade(url: str) -> None:
    writer = sqlite_engine(url, "BEGIN IMMEDIATE") if url.startswith("sqlite") \
        else create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        writer.dispose()
