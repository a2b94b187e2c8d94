"""registry/gc.py and delta chunk rows: a removed blob's rows go with its file, a sweep
forgets the rows of blobs the store does not hold (and only those), a dry run forgets
nothing, and a table that fails to forget never fails the removal."""

from __future__ import annotations

from pathlib import Path

from stablemirror.oci.digest import Digest
from stablemirror.registry.gc import remove_blob_file, sweep_chunk_rows

STORED = Digest.of(b"stored")
GONE = Digest.of(b"gone")


class Rows:
    """The chunk table's two calls collection makes; `broken` makes forget raise."""

    def __init__(self, *digests: Digest, broken: bool = False) -> None:
        self.digests = [str(d) for d in digests]
        self.broken = broken

    async def indexed_digests(self) -> list[str]:
        return list(self.digests)

    async def forget(self, digest: str) -> None:
        if self.broken:
            raise OSError("database is locked")
        self.digests.remove(digest)


class Store:
    """A blob store holding `held`: stat, and trash/drop of a removal."""

    def __init__(self, *held: Digest) -> None:
        self.held = set(held)

    async def stat(self, digest: Digest) -> int | None:
        return 1 if digest in self.held else None

    async def trash(self, digest: Digest, token: str) -> Path | None:
        if digest not in self.held:
            return None
        self.held.discard(digest)
        return Path("/trash") / token

    async def restore(self, digest: Digest, trashed: Path) -> None:
        self.held.add(digest)

    async def drop_trashed(self, trashed: Path) -> None:
        return None


class Index:
    def __init__(self, *known: Digest) -> None:
        self.known = {str(d) for d in known}

    async def blob_known(self, digest: str) -> bool:
        return digest in self.known


async def test_a_removed_blob_takes_its_chunk_rows_along() -> None:
    rows, store = Rows(STORED, GONE), Store(STORED, GONE)
    assert await remove_blob_file(store, Index(), GONE, rows)  # type: ignore[arg-type]
    assert rows.digests == [str(STORED)]
    # a file already gone: its rows still go
    assert await remove_blob_file(store, Index(), GONE, Rows(GONE))  # type: ignore[arg-type]


async def test_a_blob_a_push_raced_back_keeps_file_and_rows() -> None:
    rows, store = Rows(STORED), Store(STORED)
    assert not await remove_blob_file(store, Index(STORED), STORED, rows)  # type: ignore[arg-type]
    assert store.held == {STORED} and rows.digests == [str(STORED)]


async def test_the_sweep_forgets_rows_of_blobs_not_stored_only() -> None:
    rows = Rows(STORED, GONE)
    rows.digests.append("not-a-digest")  # cannot be a stored blob either
    assert await sweep_chunk_rows(rows, Store(STORED), dry_run=True) == 2  # type: ignore[arg-type]
    assert len(rows.digests) == 3
    assert await sweep_chunk_rows(rows, Store(STORED)) == 2  # type: ignore[arg-type]
    assert rows.digests == [str(STORED)]
    assert await sweep_chunk_rows(rows, Store(STORED)) == 0  # type: ignore[arg-type]


async def test_a_failing_table_never_fails_the_removal() -> None:
    rows, store = Rows(GONE, broken=True), Store(GONE)
    assert await remove_blob_file(store, Index(), GONE, rows)  # type: ignore[arg-type]
    assert store.held == set()
    assert await sweep_chunk_rows(rows, store) == 1  # type: ignore[arg-type]
