"""What the integrity and trust tables hold, and the protocol both of their backends
implement (index/sql_trust.py on SQLAlchemy, index/lite_trust.py on sqlite3); no database
code here, so the rooms that use them import no driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

OK = "ok"
QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class PolicyKeyRow:
    role: str
    key_id: str
    public_key: str  # PEM
    label: str


@dataclass(frozen=True, slots=True)
class PolicyRow:
    pattern: str
    mode: str
    updated_at: float
    keys: tuple[PolicyKeyRow, ...]


@dataclass(frozen=True, slots=True)
class IntegrityRow:
    digest: str
    state: str
    size: int | None
    verified_at: float | None
    stale_at: float | None
    quarantined_at: float | None
    quarantine_path: str | None
    detail: str | None


class TrustIndex(Protocol):
    async def list_policies(self) -> list[PolicyRow]: ...
    async def set_policy(self, pattern: str, mode: str, keys: list[PolicyKeyRow]) -> None:
        """Create or replace the policy for `pattern` (its keys are replaced too)."""
        ...

    async def delete_policy(self, pattern: str) -> bool: ...
    async def parent_indexes(self, repository: str, digest: str) -> list[str]:
        """Digests of the image indexes in `repository` that list manifest `digest`."""
        ...

    async def integrity(self, digest: str) -> IntegrityRow | None: ...
    async def quarantined(self) -> list[IntegrityRow]: ...
    async def verified_after(self, cutoff: float) -> set[str]:
        """Blobs verified since `cutoff` and not marked stale since."""
        ...

    async def record_verified(self, digest: str, size: int, at: float | None = None
                              ) -> None: ...
    async def record_quarantine(self, digest: str, path: str | None, detail: str) -> None: ...
    async def mark_stale(self, at: float | None = None) -> int:
        """Make every earlier verification stale (verify_on_read=first re-hashes them)."""
        ...

    async def repositories_with_blob(self, digest: str) -> list[str]: ...
    async def indexed_blobs(self) -> dict[str, int]: ...
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Hold `name` for `ttl` seconds if it is free, expired or already ours."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...
