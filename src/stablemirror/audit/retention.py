"""Retention: prune old records and leave a signed checkpoint, so the rest still verifies.

Pruning removes the oldest run of records in one transaction (holding the chain head's lock)
and writes a checkpoint: the last pruned seq and hash, how many were pruned, and the hash of
the previous checkpoint, signed with an Ed25519 key. `verify` then starts the chain from the
newest checkpoint instead of GENESIS. The key lives in a file outside the database (default
`<data dir>/audit-checkpoint.key`): whoever can edit the database cannot forge a checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection, delete, func, select

from stablemirror.files.create_once import create_once
from stablemirror.index.audit_chain import GENESIS, append
from stablemirror.index.audit_events import AuditEvent, canonical, now
from stablemirror.index.schema_auth import audit_checkpoints, audit_head, audit_log


class CheckpointKey:
    """The Ed25519 key that signs checkpoints; created on first use, mode 0600."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> CheckpointKey:
        # Several workers start at once: exactly one key is made, and none of them reads
        # it half-written (create_once.py).
        pem = create_once(path, lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        private = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(private)

    def sign(self, payload: str) -> str:
        return base64.b64encode(self.private.sign(payload.encode())).decode()

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


@dataclass(frozen=True)
class Checkpoint:
    payload: dict[str, Any]
    payload_text: str
    signature: str
    key_id: str

    @property
    def through_seq(self) -> int:
        return int(self.payload["through_seq"])

    @property
    def through_hash(self) -> str:
        return str(self.payload["through_hash"])

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload_text.encode()).hexdigest()

    def signed_by(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(base64.b64decode(self.signature), self.payload_text.encode())
        except (InvalidSignature, ValueError):
            return False
        return True


def load_checkpoints(conn: Connection) -> list[Checkpoint]:
    rows = conn.execute(
        select(audit_checkpoints.c.payload, audit_checkpoints.c.signature,
               audit_checkpoints.c.key_id).order_by(audit_checkpoints.c.id)
    ).all()
    out = []
    for text, signature, key_id in rows:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"through_seq": -1, "through_hash": "", "unparseable": True}
        out.append(Checkpoint(payload, text, signature, key_id))
    return out


def check_checkpoints(checkpoints: list[Checkpoint], key: Ed25519PublicKey | None,
                      ) -> tuple[int, str, str]:
    """(seq the log must continue at, prev hash it must link to, "" or what is wrong)."""
    expected_first, prev_hash, prev_digest = 1, GENESIS, None
    for i, cp in enumerate(checkpoints):
        where = f"checkpoint {i + 1} (through record {cp.payload.get('through_seq')})"
        if key is None:
            return expected_first, prev_hash, f"{where}: no checkpoint key to check it with"
        if not cp.signed_by(key):
            return expected_first, prev_hash, f"{where}: signature does not verify"
        if cp.payload.get("prev_checkpoint") != prev_digest:
            return expected_first, prev_hash, f"{where}: does not link to the checkpoint before"
        if cp.payload.get("first_seq") != expected_first or cp.through_seq < expected_first:
            return expected_first, prev_hash, f"{where}: does not continue at {expected_first}"
        expected_first, prev_hash, prev_digest = cp.through_seq + 1, cp.through_hash, cp.digest
    return expected_first, prev_hash, ""


def prune(conn: Connection, cutoff: float, key: CheckpointKey,
          actor: str = "retention") -> Checkpoint | None:
    """Remove records older than `cutoff` (a unix time) in this transaction; None if none."""
    head = conn.execute(
        select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()).scalar_one()
    lowest = conn.execute(select(func.min(audit_log.c.seq))).scalar()
    if lowest is None:
        return None
    # Prune a prefix only: the first record at or after the cutoff, and all after it, stay.
    first_kept = conn.execute(
        select(func.min(audit_log.c.seq)).where(audit_log.c.time >= cutoff)).scalar()
    through = int(head) if first_kept is None else int(first_kept) - 1
    if through < lowest:
        return None
    through_hash = conn.execute(
        select(audit_log.c.hash).where(audit_log.c.seq == through)).scalar_one()
    previous = load_checkpoints(conn)
    removed = conn.execute(delete(audit_log).where(audit_log.c.seq <= through)).rowcount
    payload = {
        "first_seq": int(lowest),
        "through_seq": through,
        "through_hash": through_hash,
        "pruned": removed,
        "cutoff": cutoff,
        "created_at": now(),
        "prev_checkpoint": previous[-1].digest if previous else None,
        "key_id": key.key_id,
    }
    text = canonical(payload)
    checkpoint = Checkpoint(payload, text, key.sign(text), key.key_id)
    conn.execute(audit_checkpoints.insert().values(
        payload=text, signature=checkpoint.signature, key_id=key.key_id, through_seq=through,
        created_at=payload["created_at"]))
    # The pruning itself is on the record, in the same transaction.
    append(conn, AuditEvent(action="audit.prune", actor=actor, result="ok",
                            detail={"through_seq": through, "pruned": removed,
                                    "checkpoint": checkpoint.digest}))
    return checkpoint
