"""The audit chain's append on sqlite3 (index/audit_chain.py's `append`, same rows): inside
the caller's write transaction, which holds SQLite's one writer lock from BEGIN IMMEDIATE,
so reading the head and writing the new one is serialized across processes."""

from __future__ import annotations

import sqlite3

from stablemirror.index.audit_events import AuditEvent, AuditRecord, canonical
from stablemirror.index.audit_hash import clip, record_hash


def append(conn: sqlite3.Connection, event: AuditEvent) -> AuditRecord:
    event = clip(event)
    head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    seq, prev = int(head[0]) + 1, str(head[1])
    digest = record_hash(seq, event, prev)
    conn.execute(
        "INSERT INTO audit_log (seq, time, actor, client, user_agent, action, repository, "
        "reference, digest, result, detail, request_id, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, event.time, event.actor, event.client, event.user_agent, event.action,
         event.repository, event.reference, event.digest, event.result,
         canonical(event.detail), event.request_id, prev, digest))
    conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
    return AuditRecord(seq, event, prev, digest)
