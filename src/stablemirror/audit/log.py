"""The audit log as a service: record events, verify the chain, prune, query."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Select, select

from stablemirror.audit.retention import (
    Checkpoint,
    CheckpointKey,
    check_checkpoints,
    load_checkpoints,
    prune,
)
from stablemirror.index.audit_chain import ChainCheck, append, row_record, stored_detail_matches
from stablemirror.index.audit_events import AuditEvent, AuditRecord
from stablemirror.index.db import Database
from stablemirror.index.schema_auth import audit_head, audit_log
from stablemirror.oci.patterns import glob_match

T = TypeVar("T")
BATCH = 2000


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_seq: int | None
    last_seq: int
    head_hash: str
    checkpoints: int
    broken_seq: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "head_hash": self.head_hash,
                "checkpoints": self.checkpoints, "broken_seq": self.broken_seq,
                "reason": self.reason}


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    repository: str | None = None  # glob
    actor: str | None = None
    actions: tuple[str, ...] = ()
    after_seq: int = 0
    limit: int | None = None


class AuditLog:
    def __init__(self, db: Database, key_file: Path) -> None:
        self.db = db
        self.key_file = key_file

    def key(self) -> CheckpointKey:
        return CheckpointKey.load_or_create(self.key_file)

    def public_key(self) -> Ed25519PublicKey | None:
        return self.key().public if self.key_file.exists() else None

    async def record(self, event: AuditEvent) -> None:
        """Append `event` in its own transaction (pulls, logins, grants, denials)."""
        await self.db.write(lambda c: append(c, event))

    async def _reading(self, fn: Callable[[Connection], T]) -> T:
        # Long scans run in a thread on their own connection: never inline on the loop.
        def run() -> T:
            with self.db.reader.connect() as conn:
                return fn(conn)
        return await asyncio.to_thread(run)

    async def verify(self) -> VerifyReport:
        """Checkpoints, head and records are read as one snapshot (a prune committing
        between two reads made a sound chain look broken), without pausing appends."""
        public = self.public_key()
        return await self.db.snapshot(lambda c: _verify(c, public))

    async def prune_older_than(self, cutoff: float, actor: str = "retention",
                               ) -> Checkpoint | None:
        key = self.key()
        return await self.db.write(lambda c: prune(c, cutoff, key, actor))

    async def query(self, q: AuditQuery) -> list[AuditRecord]:
        return await self._reading(lambda c: list(iter_records(c, q)))


def _select(q: AuditQuery) -> Select[Any]:
    stmt = select(audit_log).where(audit_log.c.seq > q.after_seq).order_by(audit_log.c.seq)
    if q.since is not None:
        stmt = stmt.where(audit_log.c.time >= q.since)
    if q.until is not None:
        stmt = stmt.where(audit_log.c.time < q.until)
    if q.actor is not None:
        stmt = stmt.where(audit_log.c.actor == q.actor)
    if q.actions:
        stmt = stmt.where(audit_log.c.action.in_(q.actions))
    if q.repository is not None and "*" not in q.repository and "?" not in q.repository:
        stmt = stmt.where(audit_log.c.repository == q.repository)
    return stmt


def iter_records(conn: Connection, q: AuditQuery) -> Iterator[AuditRecord]:
    after, produced = q.after_seq, 0
    while True:
        batch = conn.execute(_select(AuditQuery(q.since, q.until, q.repository, q.actor,
                                                q.actions, after)).limit(BATCH)).all()
        for row in batch:
            record = row_record(row)
            after = record.seq
            if q.repository is not None and not glob_match(q.repository,
                                                           record.event.repository):
                continue
            yield record
            produced += 1
            if q.limit is not None and produced >= q.limit:
                return
        if len(batch) < BATCH:
            return


def _verify(conn: Connection, public: Ed25519PublicKey | None) -> VerifyReport:
    checkpoints = load_checkpoints(conn)
    start_seq, start_prev, problem = check_checkpoints(checkpoints, public)
    head_seq, head_hash = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
    check = ChainCheck(start_seq, start_prev)
    first: int | None = None
    if problem:
        check.broken_seq, check.reason = start_seq, problem
    else:
        after = start_seq - 1
        while check.broken_seq is None:
            rows = conn.execute(select(audit_log).where(audit_log.c.seq > after)
                                .order_by(audit_log.c.seq).limit(BATCH)).all()
            for row in rows:
                record = row_record(row)
                first = record.seq if first is None else first
                if not check.feed(record, stored_detail_matches(row, record)):
                    break
                after = record.seq
            if len(rows) < BATCH:
                break
        if check.broken_seq is None:
            # Records below the newest checkpoint must be gone; a leftover is a forgery.
            stray = conn.execute(select(audit_log.c.seq).where(audit_log.c.seq < start_seq)
                                 .limit(1)).scalar()
            if stray is not None:
                check.broken_seq = int(stray)
                check.reason = "record lies before the newest retention checkpoint"
            else:
                check.finish(int(head_seq), str(head_hash))
    return VerifyReport(ok=check.broken_seq is None, checked=check.checked, first_seq=first,
                        last_seq=int(head_seq), head_hash=str(head_hash),
                        checkpoints=len(checkpoints), broken_seq=check.broken_seq,
                        reason=check.reason)
