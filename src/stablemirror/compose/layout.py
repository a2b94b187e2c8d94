"""The data directory, named in one place. The composition root hands these paths out;
no other module spells a name under the data dir.

    blobs/ uploads/ trash/ quarantine/   the blob store's own (store/filesystem.py)
    index.db                  the SQLite index, unless `database_url` names another (config.py)
    fetch/                    the mirror's blobs in flight (store/fetch_files.py)
    node-id                   this node's name in Via headers, made once (compose/mirror.py)
    evict.lock                one cache evictor at a time across workers (mirror/evict.py)
    audit-checkpoint.key      signs retention checkpoints, unless configured elsewhere
    audit-forward.state       how far the audit forwarder got (audit/forward.py)
    p2p/                      torrents made here, swarms tracked here, pieces a node downloads
    metrics-dir               where a running server keeps its metrics (server/metrics_dir.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def fetch(self) -> Path:
        return self.root / "fetch"

    @property
    def p2p(self) -> Path:
        return self.root / "p2p"

    @property
    def node_id(self) -> Path:
        return self.root / "node-id"

    @property
    def evict_lock(self) -> Path:
        return self.root / "evict.lock"

    @property
    def audit_checkpoint_key(self) -> Path:
        return self.root / "audit-checkpoint.key"

    @property
    def audit_forward_state(self) -> Path:
        return self.root / "audit-forward.state"
