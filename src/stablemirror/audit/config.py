"""Audit settings (the `audit:` section; env STABLEMIRROR_AUDIT__*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class AuditSettings(BaseModel):
    enabled: bool | None = Field(
        default=None, description="record the audit trail; default: on when auth is on")
    retention_days: float = Field(default=180.0, gt=0,
                                  description="records older than this are pruned")
    prune_interval_seconds: float = Field(default=3600.0, gt=0,
                                          description="how often the retention job runs")
    checkpoint_key_file: Path | None = Field(
        default=None, description="Ed25519 key signing checkpoints; default in the data dir")
    forward_file: Path | None = Field(
        default=None, description="append every record to this file as a JSON line")
    forward_syslog: str | None = Field(
        default=None, description="send every record to syslog: /dev/log, HOST:PORT (UDP)")
    forward_interval_seconds: float = Field(default=1.0, gt=0)
