"""What the delta tables answer, and the protocol both chunk-table backends implement
(delta/store.py on SQLAlchemy, delta/lite_store.py on sqlite3); no database code here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stablemirror.delta.format import ChunkIndex
from stablemirror.oci.manifest import Descriptor

LOOKUP_BATCH = 500  # hashes per IN (...): below SQLite's variable limit
INSERT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class LayerOrigin:
    """Where a weight layer was seen: its chunk index hangs off this manifest upstream."""

    repository: str
    manifest: str
    manifest_media_type: str
    size: int


class ChunkStore(Protocol):
    async def remember_layers(self, repository: str, manifest: str, media_type: str,
                              layers: Sequence[Descriptor]) -> None: ...
    async def layer(self, digest: str) -> LayerOrigin | None: ...
    async def is_indexed(self, digest: str) -> bool: ...
    async def record(self, digest: str, index: ChunkIndex) -> None:
        """The chunks of local blob `digest` (replacing what was recorded before)."""
        ...

    async def forget(self, digest: str) -> None: ...
    async def indexed_digests(self) -> list[str]:
        """Every blob with recorded chunks (garbage collection sweeps those not stored)."""
        ...

    async def lookup(self, hashes: Sequence[bytes], params_key: str, exclude: str = ""
                     ) -> dict[bytes, tuple[str, int]]:
        """hash -> (blob digest, offset) for the hashes some local blob holds."""
        ...
