"""The hash chain's arithmetic (pure, no database): how a record is clipped to its columns
and hashed. index/audit_chain.py appends with SQLAlchemy, index/lite_audit.py with sqlite3;
both hash with this."""

from __future__ import annotations

import hashlib

from stablemirror.index.audit_events import AuditEvent, canonical

GENESIS = "0" * 64


def record_hash(seq: int, event: AuditEvent, prev_hash: str) -> str:
    body = {
        "seq": seq,
        "time": f"{event.time:.6f}",
        "actor": event.actor,
        "client": event.client,
        "user_agent": event.user_agent,
        "action": event.action,
        "repository": event.repository,
        "reference": event.reference,
        "digest": event.digest,
        "result": event.result,
        "detail": canonical(event.detail),
        "request_id": event.request_id,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


def clip(event: AuditEvent) -> AuditEvent:
    """Columns are bounded; clip before hashing so the stored row is what was hashed."""
    return event.but(actor=_clip(event.actor, 255), client=_clip(event.client, 64),
                     user_agent=_clip(event.user_agent, 1024),
                     repository=_clip(event.repository, 255),
                     reference=_clip(event.reference, 255),
                     request_id=_clip(event.request_id, 64))
