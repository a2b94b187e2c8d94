"""The delta tables (migration 0007) behave the same on SQLite and PostgreSQL: chunks of a
blob recorded and replaced, looked up by hash within one chunking, weight layers by
manifest."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.delta.chunk_rows import ChunkStore
from stablemirror.delta.chunker import Indexer
from stablemirror.delta.format import ChunkParams
from stablemirror.delta.lite_store import LiteChunkTable
from stablemirror.delta.store import ChunkTable
from stablemirror.index.db import Database
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Descriptor
from tests.contract.test_index import LITE, NODE_BACKENDS, _url, lite_db

PARAMS = ChunkParams(avg=4096, min=1024, max=16384)


@pytest.fixture(params=NODE_BACKENDS)
async def table(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChunkStore]:
    url = _url(request.param, request, tmp_path)
    if request.param == LITE:
        lite = lite_db(url)
        yield LiteChunkTable(lite)
        await lite.close()
        return
    db = Database(url)
    yield ChunkTable(db)
    await db.close()


def _index(data: bytes, params: ChunkParams = PARAMS):  # type: ignore[no-untyped-def]
    i = Indexer(params)
    i.feed(data)
    return i.finish()


async def test_record_lookup_replace_forget(table: ChunkStore) -> None:
    data = os.urandom(200_000)
    index = _index(data)
    blob = str(Digest.of(data))
    assert not await table.is_indexed(blob)
    await table.record(blob, index)
    assert await table.is_indexed(blob)
    hashes = [c.hash for c in index.chunks()]
    found = await table.lookup([*hashes, b"\0" * 32], PARAMS.key)
    assert found == {c.hash: (blob, c.offset) for c in index.chunks()}
    assert await table.lookup(hashes, "other-chunking") == {}
    assert await table.lookup(hashes, PARAMS.key, exclude=blob) == {}
    await table.record(blob, index)  # again: replaced, not doubled
    assert len(await table.lookup(hashes, PARAMS.key)) == len(index)
    other = os.urandom(50_000)
    await table.record(str(Digest.of(other)), _index(other))
    assert sorted(await table.indexed_digests()) == sorted([blob, str(Digest.of(other))])
    await table.forget(blob)
    assert not await table.is_indexed(blob) and await table.lookup(hashes, PARAMS.key) == {}
    assert await table.indexed_digests() == [str(Digest.of(other))]


async def test_many_hashes_are_looked_up_in_batches(table: ChunkStore) -> None:
    data = os.urandom(3 << 20)
    index = _index(data, ChunkParams(avg=1024, min=256, max=4096))
    assert len(index) > 1000  # more than two lookup batches
    await table.record("sha256:" + "1" * 64, index)
    found = await table.lookup([c.hash for c in index.chunks()], index.params.key)
    assert len(found) == len({c.hash for c in index.chunks()})


async def test_weight_layers_by_manifest(table: ChunkStore) -> None:
    layer = Descriptor("application/vnd.cncf.model.weight.v1.raw", Digest.of(b"w"), 5 << 20)
    assert await table.layer(str(layer.digest)) is None
    await table.remember_layers("models/a", "sha256:" + "a" * 64, "m1", [layer])
    await table.remember_layers("models/b", "sha256:" + "b" * 64, "m2", [layer])
    origin = await table.layer(str(layer.digest))
    assert origin is not None
    assert (origin.repository, origin.manifest, origin.size) == ("models/b", "sha256:" + "b" * 64,
                                                                 5 << 20)
