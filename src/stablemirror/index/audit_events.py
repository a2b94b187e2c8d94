"""What an audit record says (pure): who did what to which repository, from where, and
how it ended. Services build events; the index writes them into the hash chain."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

# Results an event can have.
OK, DENIED, UNAUTHORIZED, FAILED = "ok", "denied", "unauthorized", "failed"


def canonical(obj: Any) -> str:
    """The one JSON spelling that hashes and signs: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def now() -> float:
    # Microsecond precision: the stored float round-trips exactly through both databases
    # and prints the same way in the hashed form.
    return round(time.time(), 6)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str  # e.g. manifest.pull, manifest.push, tag.move, token.grant, request.denied
    actor: str = ""  # user or robot id; "" for anonymous
    client: str = ""
    user_agent: str = ""
    repository: str = ""
    reference: str = ""
    digest: str = ""
    result: str = OK
    detail: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    time: float = field(default_factory=now)

    def but(self, **changes: Any) -> AuditEvent:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An event as stored: its place in the chain and the hashes that link it."""

    seq: int
    event: AuditEvent
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {"seq": self.seq, "time": e.time, "actor": e.actor, "client": e.client,
                "user_agent": e.user_agent, "action": e.action, "repository": e.repository,
                "reference": e.reference, "digest": e.digest, "result": e.result,
                "detail": e.detail, "request_id": e.request_id, "prev_hash": self.prev_hash,
                "hash": self.hash}


# Where a component hands its audit events: the audit log's append (audit/log.py).
AuditSink = Callable[[AuditEvent], Awaitable[None]]
