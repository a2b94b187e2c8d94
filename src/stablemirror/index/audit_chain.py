"""The hash chain: how a record is hashed, appended and checked.

Each record stores `prev_hash` (the hash of the record before it, or GENESIS) and `hash`,
the SHA-256 of the canonical JSON of its own fields plus `seq` and `prev_hash`. Editing any
field breaks that record's hash; deleting or inserting a record breaks the link or the seq
run; truncating the tail disagrees with `audit_head`.

`append` runs inside the caller's transaction, so an audit record commits together with the
change it describes. Reading the head and writing the new head happens under the head row's
lock (SELECT ... FOR UPDATE on PostgreSQL; on SQLite every write transaction already holds
the database's single writer lock from BEGIN IMMEDIATE), which serializes the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update

from stablemirror.index.audit_events import AuditEvent, AuditRecord, canonical
from stablemirror.index.audit_hash import GENESIS, clip, record_hash
from stablemirror.index.schema_auth import audit_head, audit_log

__all__ = ["GENESIS", "ChainCheck", "append", "record_hash", "row_record",
           "stored_detail_matches"]


def append(conn: Connection, event: AuditEvent) -> AuditRecord:
    """Add `event` to the chain inside the caller's transaction."""
    event = clip(event)
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    seq, prev = int(head[0]) + 1, str(head[1])
    digest = record_hash(seq, event, prev)
    conn.execute(audit_log.insert().values(
        seq=seq, time=event.time, actor=event.actor, client=event.client,
        user_agent=event.user_agent, action=event.action, repository=event.repository,
        reference=event.reference, digest=event.digest, result=event.result,
        detail=canonical(event.detail), request_id=event.request_id, prev_hash=prev,
        hash=digest))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return AuditRecord(seq, event, prev, digest)


def row_record(row: Row[Any]) -> AuditRecord:
    m = row._mapping
    try:
        detail = json.loads(m["detail"]) if m["detail"] else {}
    except ValueError:
        detail = {"unparseable": m["detail"]}  # verify still fails on the hash
    event = AuditEvent(
        action=m["action"], actor=m["actor"], client=m["client"], user_agent=m["user_agent"],
        repository=m["repository"], reference=m["reference"], digest=m["digest"],
        result=m["result"], detail=detail, request_id=m["request_id"], time=float(m["time"]))
    return AuditRecord(int(m["seq"]), event, m["prev_hash"], m["hash"])


def stored_detail_matches(row: Row[Any], record: AuditRecord) -> bool:
    """The detail text as stored is the canonical spelling of what was hashed."""
    return bool(row._mapping["detail"] == canonical(record.event.detail))


@dataclass
class ChainCheck:
    """Walks records in seq order and stops at the first one that breaks the chain."""

    expected_seq: int
    expected_prev: str
    checked: int = 0
    broken_seq: int | None = None
    reason: str = ""

    def feed(self, record: AuditRecord, detail_canonical: bool = True) -> bool:
        if record.seq != self.expected_seq:
            return self._break(record.seq, f"expected record {self.expected_seq} next, found "
                               f"{record.seq}: records are missing or out of order")
        if record.prev_hash != self.expected_prev:
            return self._break(record.seq, "prev_hash does not match the hash of the record "
                               "before it")
        if not detail_canonical or record_hash(record.seq, record.event,
                                               record.prev_hash) != record.hash:
            return self._break(record.seq, "contents do not match the record's hash "
                               "(the record was edited)")
        self.checked += 1
        self.expected_seq = record.seq + 1
        self.expected_prev = record.hash
        return True

    def finish(self, head_seq: int, head_hash: str) -> bool:
        if self.broken_seq is not None:
            return False
        last = self.expected_seq - 1
        if head_seq != last or head_hash != self.expected_prev:
            return self._break(last + 1 if head_seq > last else head_seq,
                               f"the chain head says record {head_seq} is last but the log "
                               f"ends at {last}: records were removed from the end")
        return True

    def _break(self, seq: int, reason: str) -> bool:
        self.broken_seq = seq
        self.reason = reason
        return False
