"""Replication status rows (index/schema_replication.py): what `replicate status` shows and
the lag metric is computed from, shared by every replica through the index."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from stablemirror.index.db import Database
from stablemirror.index.schema_replication import replication_status as rs


@dataclass(frozen=True, slots=True)
class RuleStatus:
    rule: str
    last_started: float | None = None
    last_finished: float | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_trigger: str | None = None
    artifacts_copied: int = 0
    bytes_copied: int = 0
    pending_artifacts: int = 0
    pending_bytes: int = 0
    oldest_pending: float | None = None
    current: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float = 0.0

    def lag(self, now: float) -> float:
        """Age of the oldest change not copied yet: the oldest pending change when one is
        known (an event waiting, or changes a run found: they are newer than the previous
        successful run); 0 when the last run succeeded; after a failure, the time since the
        last success (or since the first attempt)."""
        if self.oldest_pending is not None:
            return max(0.0, now - self.oldest_pending)
        if self.last_error is None:
            return 0.0
        since = self.last_success or self.last_started
        return max(0.0, now - since) if since is not None else 0.0


COLUMNS = [c.name for c in rs.columns]


def _status(row: Any) -> RuleStatus:
    m = dict(row._mapping)
    m["current"] = json.loads(m["current"] or "[]")
    return RuleStatus(**m)


class SqlReplicationStatus:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, rule: str) -> RuleStatus | None:
        def q(c: Connection) -> RuleStatus | None:
            row = c.execute(select(rs).where(rs.c.rule == rule)).first()
            return _status(row) if row is not None else None
        return await self.db.read(q)

    async def all(self) -> list[RuleStatus]:
        def q(c: Connection) -> list[RuleStatus]:
            return [_status(r) for r in c.execute(select(rs).order_by(rs.c.rule))]
        return await self.db.read(q)

    async def update(self, rule: str, **values: Any) -> None:
        """Set the given columns (others keep their values; a new row starts at zero).
        `add_artifacts` / `add_bytes` add to the copied counters instead of setting them."""
        add_artifacts = int(values.pop("add_artifacts", 0))
        add_bytes = int(values.pop("add_bytes", 0))
        if "current" in values:
            values["current"] = json.dumps(values["current"])
        unknown = set(values) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown status columns {sorted(unknown)}")
        now = time.time()

        def w(c: Connection) -> None:
            row = c.execute(select(rs).where(rs.c.rule == rule)).first()
            if row is None:
                fresh = {"rule": rule, "artifacts_copied": 0, "bytes_copied": 0,
                         "pending_artifacts": 0, "pending_bytes": 0, "current": "[]",
                         "updated_at": now, **values}
                fresh["artifacts_copied"] += add_artifacts
                fresh["bytes_copied"] += add_bytes
                c.execute(self.db.insert(rs).values(**fresh).on_conflict_do_nothing())
                return
            changed = {**values, "updated_at": now,
                       "artifacts_copied": row._mapping["artifacts_copied"] + add_artifacts,
                       "bytes_copied": row._mapping["bytes_copied"] + add_bytes}
            c.execute(rs.update().where(rs.c.rule == rule).values(**changed))
        await self.db.write(w)
