"""The mirror's tables (migration 0004) behave the same on every backend: SQLite and
PostgreSQL (index/mirror_sql.py) and SQLite on the stdlib's sqlite3 (index/lite_mirror.py,
a node's): tag freshness, the negative cache, access times, eviction order and the
conditional forget that eviction relies on."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_index import LiteIndex
from stablemirror.index.lite_mirror import LiteMirrorIndex
from stablemirror.index.mirror_sql import MirrorIndex
from stablemirror.index.protocol import RegistryIndex
from stablemirror.index.sql import SqlIndex
from stablemirror.oci.digest import Digest
from tests.contract.test_index import NODE_BACKENDS, _url, open_db

Stores = tuple[MirrorIndex | LiteMirrorIndex, RegistryIndex]
A, B, C = Digest.of(b"a"), Digest.of(b"bb"), Digest.of(b"ccc")


@pytest.fixture(params=NODE_BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    db = open_db(request.param, _url(request.param, request, tmp_path))
    if isinstance(db, LiteDatabase):
        yield LiteMirrorIndex(db), LiteIndex(db)
    else:
        yield MirrorIndex(db), SqlIndex(db)
    await db.close()


async def test_tag_freshness_needs_the_repository(stores: Stores) -> None:
    mirror, index = stores
    await mirror.mark_tag_checked("r", "latest")  # no repository row yet: nothing kept
    assert await mirror.tag_checked_at("r", "latest") is None
    await index.link_blob("r", A, 1)
    before = time.time()
    await mirror.mark_tag_checked("r", "latest")
    first = await mirror.tag_checked_at("r", "latest")
    assert first is not None and first >= before
    await mirror.mark_tag_checked("r", "latest")  # again: moved forward, one row
    again = await mirror.tag_checked_at("r", "latest")
    assert again is not None and again >= first
    assert await mirror.tag_checked_at("r", "other") is None
    assert await mirror.tag_checked_at("other", "latest") is None


async def test_negative_cache_expires(stores: Stores) -> None:
    mirror, _index = stores
    assert not await mirror.is_negative("r", "missing")
    await mirror.remember_negative("r", "missing", 60)
    assert await mirror.is_negative("r", "missing")
    assert not await mirror.is_negative("r", "other")
    await mirror.remember_negative("r", "missing", -1)  # replaced: already expired
    assert not await mirror.is_negative("r", "missing")


async def test_eviction_order_totals_and_conditional_forget(stores: Stores) -> None:
    mirror, index = stores
    for repo, digest, size in (("r1", A, 1), ("r2", A, 1), ("r1", B, 2), ("r1", C, 3)):
        await index.link_blob(repo, digest, size)
    assert await mirror.total_blob_bytes() == 6
    assert sorted(await mirror.blob_repositories(str(A))) == ["r1", "r2"]
    now = time.time()
    await mirror.touch_blobs({})  # nothing to write
    await mirror.touch_blobs({str(C): now - 300, str(A): now + 50})
    await mirror.touch_blobs({str(C): now - 200})  # a later touch replaces the time
    order = await mirror.eviction_candidates(10)
    assert [(d, s) for d, s, _t in order] == [(str(C), 3), (str(B), 2), (str(A), 1)]
    assert order[0][2] == pytest.approx(now - 200)
    assert len(await mirror.eviction_candidates(2)) == 2
    # Served after the cut-off (A), pushed after it (B): kept. C: forgotten everywhere.
    assert not await mirror.forget_blob(str(A), now)
    assert not await mirror.forget_blob(str(B), now - 100)
    assert await mirror.forget_blob(str(C), now)
    assert not await mirror.forget_blob(str(C), now)  # gone already
    assert await index.blob_size("r1", C) is None
    assert [d for d, _s, _t in await mirror.eviction_candidates(10)] == [str(B), str(A)]
    assert await mirror.total_blob_bytes() == 3
