"""The integrity and trust tables (migration 0003) behave the same on every backend:
SQLite and PostgreSQL (SQLAlchemy) and SQLite on the stdlib's sqlite3 (a node's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_index import LiteIndex
from stablemirror.index.lite_trust import LiteTrustIndex
from stablemirror.index.protocol import RegistryIndex
from stablemirror.index.sql import SqlIndex
from stablemirror.index.sql_trust import SqlTrustIndex
from stablemirror.index.trust_rows import PolicyKeyRow, TrustIndex
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import parse_manifest
from tests.contract.test_index import NODE_BACKENDS, _url, open_db


@pytest.fixture(params=NODE_BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[tuple[TrustIndex, RegistryIndex]]:
    """The trust index and the registry index of one backend, on one database."""
    db = open_db(request.param, _url(request.param, request, tmp_path))
    if isinstance(db, LiteDatabase):
        yield LiteTrustIndex(db), LiteIndex(db)
    else:
        yield SqlTrustIndex(db), SqlIndex(db)
    await db.close()


async def test_policies(stores: tuple[TrustIndex, RegistryIndex]) -> None:
    index = stores[0]
    dev = PolicyKeyRow("developer", "sha256:aa", "PEM-A", "dev.pub")
    plat = PolicyKeyRow("platform", "sha256:bb", "PEM-B", "platform.pub")
    await index.set_policy("models/*", "enforce", [dev, plat])
    await index.set_policy("apps/*", "warn", [dev])
    rows = await index.list_policies()
    assert [(r.pattern, r.mode) for r in rows] == [("apps/*", "warn"), ("models/*", "enforce")]
    assert rows[1].keys == (dev, plat)
    await index.set_policy("models/*", "off", [plat])  # replaces mode and keys
    rows = await index.list_policies()
    assert rows[1].mode == "off" and rows[1].keys == (plat,)
    assert await index.delete_policy("apps/*")
    assert not await index.delete_policy("apps/*")
    assert [r.pattern for r in await index.list_policies()] == ["models/*"]


async def test_integrity_rows_and_staleness(stores: tuple[TrustIndex, RegistryIndex]) -> None:
    index = stores[0]
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    before = time.time() - 1
    await index.record_verified(a, 10)
    await index.record_verified(b, 20)
    assert await index.verified_after(before) == {a, b}
    await index.record_quarantine(b, "/q/b", "content hashes to sha256:cc")
    row = await index.integrity(b)
    assert row is not None and row.state == "quarantined" and row.quarantine_path == "/q/b"
    assert [r.digest for r in await index.quarantined()] == [b]
    assert await index.verified_after(before) == {a}
    await asyncio.sleep(0.01)
    assert await index.mark_stale() == 1
    assert await index.verified_after(before) == set()
    row = await index.integrity(a)
    assert row is not None and row.stale_at is not None and row.stale_at > (row.verified_at or 0)
    await index.record_verified(b, 20)  # healed: ok again
    row = await index.integrity(b)
    assert row is not None and row.state == "ok" and row.quarantine_path is None


async def test_leases(stores: tuple[TrustIndex, RegistryIndex]) -> None:
    index = stores[0]
    assert await index.acquire_lease("scrub", "one", 60)
    assert await index.acquire_lease("scrub", "one", 60)  # renewal
    assert not await index.acquire_lease("scrub", "two", 60)
    await index.release_lease("scrub", "one")
    assert await index.acquire_lease("scrub", "two", 0.01)
    await asyncio.sleep(0.05)
    assert await index.acquire_lease("scrub", "one", 60)  # expired: taken over


async def test_core_questions(stores: tuple[TrustIndex, RegistryIndex]) -> None:
    index, core = stores
    config = b"{}"
    await core.link_blob("r/x", Digest.of(config), 2)
    await core.link_blob("r/y", Digest.of(config), 2)
    child = parse_manifest(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,'
        b'"digest":"' + str(Digest.of(config)).encode() + b'"},"layers":[]}', "")
    await core.put_manifest("r/x", child, ["c"])
    parent = parse_manifest(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":'
        + str(len(child.raw)).encode() + b',"digest":"' + str(child.digest).encode() + b'"}]}',
        "")
    await core.put_manifest("r/x", parent, ["v1"])
    assert await index.parent_indexes("r/x", str(child.digest)) == [str(parent.digest)]
    assert await index.parent_indexes("r/y", str(child.digest)) == []
    assert await index.repositories_with_blob(str(Digest.of(config))) == ["r/x", "r/y"]
    assert (await index.indexed_blobs())[str(Digest.of(config))] == 2
