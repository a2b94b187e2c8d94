"""The release tables behave the same on SQLite and PostgreSQL: channel moves with their
history and audit record in one transaction, rollback, pull counts, retention, and a
mirror's per-identity channel resolutions."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from stablemirror.index.db import Database
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_mirror import LiteChannelTags
from stablemirror.index.schema_auth import audit_log
from stablemirror.index.sql import SqlIndex
from stablemirror.metrics import Metrics
from stablemirror.oci.errors import ReleaseInvalid, TagInvalid
from stablemirror.registry.protocol import RequestContext
from stablemirror.releases.config import ReleaseSettings
from stablemirror.releases.mirror_store import MirrorChannelTags
from stablemirror.releases.retention_job import Retention
from stablemirror.releases.service import ReleaseService
from tests.contract.test_index import BACKENDS, NODE_BACKENDS, _url, image, open_db, push

CTX = RequestContext(actor="alice", client="10.0.0.1")


async def _no_audit(_event: object) -> None:
    return None


@pytest.fixture(params=BACKENDS)
async def parts(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[tuple[ReleaseService, SqlIndex]]:
    db = Database(_url(request.param, request, tmp_path))
    index = SqlIndex(db)
    yield ReleaseService(db, ReleaseSettings(), Metrics(), _no_audit), index
    await index.close()


async def test_moves_history_rollback_and_audit(parts: tuple[ReleaseService, SqlIndex]
                                                ) -> None:
    releases, index = parts
    a = await push(index, "m", image(os.urandom(8)), "1.0.0")
    b = await push(index, "m", image(os.urandom(8)), "1.1.0")
    await releases.promote(CTX, "m", "1.0.0", "stable", reason="ga")
    await releases.split(CTX, "m", "stable", {"1.0.0": 70, "1.1.0": 30})
    assert await releases.channel_names("m") == ["stable"]
    moved = await releases.rollback(CTX, "m", "stable")
    assert moved["to"] == [{"version": "1.0.0", "digest": str(a.digest), "weight": 100}]
    history = await releases.history("m", "stable")
    assert [(h["id"] > 0, h["action"], h["actor"]) for h in history] == [
        (True, "promote", "alice"), (True, "split", "alice"), (True, "rollback", "alice")]
    assert len({h["id"] for h in history}) == 3
    assert history[1]["to"][1]["digest"] == str(b.digest)
    rows = await releases.db.read(lambda c: c.execute(
        select(audit_log.c.action, audit_log.c.reference).order_by(audit_log.c.seq)).all())
    assert [tuple(r) for r in rows] == [("channel.promote", "stable"),
                                        ("channel.split", "stable"),
                                        ("channel.rollback", "stable")]
    with pytest.raises(ReleaseInvalid):
        await releases.split(CTX, "m", "stable", {"1.0.0": 70, "9.0.0": 30})
    assert len(await releases.history("m", None)) == 3  # nothing written


async def test_pushes_pulls_and_retention(parts: tuple[ReleaseService, SqlIndex]) -> None:
    releases, index = parts
    pushed = {v: await push(index, "m", image(os.urandom(8)), v)
              for v in ("1.0.0", "1.0.1", "1.0.2")}
    assert await releases.check_push("m", ["1.0.3"], "sha256:" + "0" * 64) == ["1", "1.0"]
    with pytest.raises(TagInvalid):
        await releases.check_push("m", ["1.0.0"], str(pushed["1.0.1"].digest))
    await releases.pulled(CTX, "m", None, "1.0.0", str(pushed["1.0.0"].digest))
    await releases.pulled(CTX, "m", "stable", "1.0.0", str(pushed["1.0.0"].digest))
    listing = await releases.versions("m")
    assert {v["version"]: v["pulls"] for v in listing["versions"]} == {
        "1.0.0": 2, "1.0.1": 0, "1.0.2": 0}
    await releases.pulled(CTX, "m", None, "1.0.0", str(pushed["1.0.0"].digest))
    assert (await releases.versions("m"))["versions"][0]["pulls"] == 3  # adds up
    retention = Retention(releases, index)
    dry = await retention.run(CTX, dry_run=True, repository="m", keep_per_line=1,
                              keep_days=30)
    assert [r.doomed.tag for r in dry] == ["1.0.1"]
    await retention.run(CTX, dry_run=False, repository="m", keep_per_line=1, keep_days=30)
    assert await index.get_manifest("m", pushed["1.0.1"].digest) is None
    assert await index.get_manifest("m", "1.0.0") is not None


@pytest.fixture(params=NODE_BACKENDS)
async def channel_tags(request: pytest.FixtureRequest, tmp_path: Path
                       ) -> AsyncIterator[MirrorChannelTags | LiteChannelTags]:
    """A mirror's record of upstream channels: a node keeps one too (sqlite3 backend)."""
    url = _url(request.param, request, tmp_path)
    db = open_db(request.param, url)
    yield LiteChannelTags(db) if isinstance(db, LiteDatabase) else MirrorChannelTags(db)
    await db.close()


async def test_mirror_channel_resolutions(channel_tags: MirrorChannelTags | LiteChannelTags
                                          ) -> None:
    tags = channel_tags
    assert not await tags.is_channel("m", "stable")
    await tags.remember("m", "stable", "node-1", "sha256:a")
    await tags.remember("m", "stable", "node-2", "sha256:b")
    await tags.remember("m", "stable", "node-1", "sha256:c")
    assert await tags.is_channel("m", "stable")
    assert await tags.lookup("m", "stable", "node-1") == "sha256:c"
    assert await tags.lookup("m", "stable", "node-2") == "sha256:b"
    assert await tags.channels("m") == ["stable"]
    await tags.forget("m", "stable")
    assert not await tags.is_channel("m", "stable")
