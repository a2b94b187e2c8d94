"""Bring an index database to the newest schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from stablemirror.index.db import sqlite_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(url: str) -> None:
    writer = sqlite_engine(url, "BEGIN IMMEDIATE") if url.startswith("sqlite") \
        else create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with writer.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        writer.dispose()
