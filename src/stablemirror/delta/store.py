"""SQL of the delta tables (delta/schema.py): the local chunk table, indexed blobs, and the
weight layers of manifests that passed through a mirror."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Connection, delete, select

from stablemirror.delta.chunk_rows import INSERT_BATCH, LOOKUP_BATCH, LayerOrigin
from stablemirror.delta.format import ChunkIndex
from stablemirror.delta.schema import delta_chunks, delta_indexed, delta_layers
from stablemirror.index.db import Database
from stablemirror.oci.manifest import Descriptor

__all__ = ["INSERT_BATCH", "LOOKUP_BATCH", "ChunkTable", "LayerOrigin"]


class ChunkTable:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def remember_layers(self, repository: str, manifest: str, media_type: str,
                              layers: Sequence[Descriptor]) -> None:
        if not layers:
            return
        now = time.time()
        rows = [{"digest": str(d.digest), "repository": repository, "manifest": manifest,
                 "manifest_media_type": media_type, "size": d.size, "seen_at": now}
                for d in layers]
        stmt = self.db.insert(delta_layers)
        stmt = stmt.on_conflict_do_update(index_elements=["digest"], set_={
            "repository": stmt.excluded.repository, "manifest": stmt.excluded.manifest,
            "manifest_media_type": stmt.excluded.manifest_media_type,
            "seen_at": stmt.excluded.seen_at})
        await self.db.write(lambda c: c.execute(stmt, rows))

    async def layer(self, digest: str) -> LayerOrigin | None:
        q = select(delta_layers).where(delta_layers.c.digest == digest)
        row = await self.db.read(lambda c: c.execute(q).first())
        if row is None:
            return None
        return LayerOrigin(row.repository, row.manifest, row.manifest_media_type, row.size)

    async def is_indexed(self, digest: str) -> bool:
        q = select(delta_indexed.c.digest).where(delta_indexed.c.digest == digest)
        return await self.db.read(lambda c: c.execute(q).first()) is not None

    async def record(self, digest: str, index: ChunkIndex) -> None:
        """The chunks of local blob `digest` (replacing what was recorded before)."""
        key = index.params.key
        rows = [{"digest": digest, "offset": c.offset, "length": c.length, "hash": c.hash,
                 "params": key} for c in index.chunks()]

        def run(c: Connection) -> None:
            c.execute(delete(delta_chunks).where(delta_chunks.c.digest == digest))
            for i in range(0, len(rows), INSERT_BATCH):
                c.execute(delta_chunks.insert(), rows[i:i + INSERT_BATCH])
            c.execute(self.db.insert(delta_indexed)
                      .values(digest=digest, params=key, chunks=len(rows),
                              indexed_at=time.time())
                      .on_conflict_do_update(index_elements=["digest"],
                                             set_={"params": key, "chunks": len(rows)}))

        await self.db.write(run)

    async def forget(self, digest: str) -> None:
        def run(c: Connection) -> None:
            c.execute(delete(delta_chunks).where(delta_chunks.c.digest == digest))
            c.execute(delete(delta_indexed).where(delta_indexed.c.digest == digest))
        await self.db.write(run)

    async def indexed_digests(self) -> list[str]:
        def run(c: Connection) -> list[str]:
            return [r[0] for r in c.execute(select(delta_indexed.c.digest))]
        return await self.db.read(run)

    async def lookup(self, hashes: Sequence[bytes], params_key: str, exclude: str = ""
                     ) -> dict[bytes, tuple[str, int]]:
        """hash -> (blob digest, offset) for the hashes some local blob holds. One snapshot
        read in a thread: a large layer's hashes take many batches, too long for the loop."""
        unique = list(dict.fromkeys(hashes))

        def run(c: Connection) -> dict[bytes, tuple[str, int]]:
            found: dict[bytes, tuple[str, int]] = {}
            for i in range(0, len(unique), LOOKUP_BATCH):
                q = (select(delta_chunks.c.hash, delta_chunks.c.digest, delta_chunks.c.offset)
                     .where(delta_chunks.c.hash.in_(unique[i:i + LOOKUP_BATCH]),
                            delta_chunks.c.params == params_key,
                            delta_chunks.c.digest != exclude))
                for row in c.execute(q):
                    found.setdefault(bytes(row.hash), (str(row.digest), int(row.offset)))
            return found

        return await self.db.snapshot(run)
