"""The delta tables on sqlite3 (delta/store.py's ChunkTable, same rows), for the
stdlib-sqlite3 backend of a node (index/lite_db.py, docs/footprint.md)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from stablemirror.delta.chunk_rows import INSERT_BATCH, LOOKUP_BATCH, LayerOrigin
from stablemirror.delta.format import ChunkIndex
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.oci.manifest import Descriptor


class LiteChunkTable:
    def __init__(self, db: LiteDatabase) -> None:
        self.db = db

    async def remember_layers(self, repository: str, manifest: str, media_type: str,
                              layers: Sequence[Descriptor]) -> None:
        if not layers:
            return
        now = time.time()
        rows = [(str(d.digest), repository, manifest, media_type, d.size, now) for d in layers]
        await self.db.write(lambda c: c.executemany(
            "INSERT INTO delta_layers (digest, repository, manifest, manifest_media_type, size, "
            "seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
            "repository = excluded.repository, manifest = excluded.manifest, "
            "manifest_media_type = excluded.manifest_media_type, seen_at = excluded.seen_at",
            rows))

    async def layer(self, digest: str) -> LayerOrigin | None:
        row = await self.db.read(lambda c: c.execute(
            "SELECT repository, manifest, manifest_media_type, size FROM delta_layers "
            "WHERE digest = ?", (digest,)).fetchone())
        return None if row is None else LayerOrigin(row[0], row[1], row[2], row[3])

    async def is_indexed(self, digest: str) -> bool:
        return await self.db.read(lambda c: c.execute(
            "SELECT digest FROM delta_indexed WHERE digest = ?", (digest,)).fetchone()
        ) is not None

    async def record(self, digest: str, index: ChunkIndex) -> None:
        """The chunks of local blob `digest` (replacing what was recorded before)."""
        key = index.params.key
        rows = [(digest, c.offset, c.length, c.hash, key) for c in index.chunks()]

        def run(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM delta_chunks WHERE digest = ?", (digest,))
            for i in range(0, len(rows), INSERT_BATCH):
                c.executemany('INSERT INTO delta_chunks (digest, "offset", length, hash, params) '
                              "VALUES (?, ?, ?, ?, ?)", rows[i:i + INSERT_BATCH])
            c.execute("INSERT INTO delta_indexed (digest, params, chunks, indexed_at) "
                      "VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET params = ?, "
                      "chunks = ?", (digest, key, len(rows), time.time(), key, len(rows)))

        await self.db.write(run)

    async def forget(self, digest: str) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM delta_chunks WHERE digest = ?", (digest,))
            c.execute("DELETE FROM delta_indexed WHERE digest = ?", (digest,))
        await self.db.write(run)

    async def indexed_digests(self) -> list[str]:
        def run(c: sqlite3.Connection) -> list[str]:
            return [r[0] for r in c.execute("SELECT digest FROM delta_indexed")]
        return await self.db.read(run)

    async def lookup(self, hashes: Sequence[bytes], params_key: str, exclude: str = ""
                     ) -> dict[bytes, tuple[str, int]]:
        """hash -> (blob digest, offset) for the hashes some local blob holds, from one
        snapshot (a large layer's hashes take many batches)."""
        unique = list(dict.fromkeys(hashes))

        def run(c: sqlite3.Connection) -> dict[bytes, tuple[str, int]]:
            found: dict[bytes, tuple[str, int]] = {}
            for i in range(0, len(unique), LOOKUP_BATCH):
                batch = unique[i:i + LOOKUP_BATCH]
                for h, d, offset in c.execute(
                        'SELECT hash, digest, "offset" FROM delta_chunks WHERE hash IN '
                        f"({', '.join('?' * len(batch))}) AND params = ? AND digest != ?",
                        (*batch, params_key, exclude)):
                    found.setdefault(bytes(h), (str(d), int(offset)))
            return found

        return await self.db.snapshot(run)
