"""The audit chain on both index backends: appends are serialized (concurrent writers, in one
process and across processes), index changes and their records commit together, any edit,
removal or truncation breaks verification, and pruning leaves a signed checkpoint."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, delete, select, update

from stablemirror.audit.log import AuditLog, AuditQuery
from stablemirror.index.audit_chain import append
from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.db import Database
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_index import LiteIndex
from stablemirror.index.migrate import upgrade
from stablemirror.index.protocol import RegistryIndex
from stablemirror.index.schema_auth import audit_checkpoints, audit_log
from stablemirror.index.sql import SqlIndex
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestBlobUnknown
from tests.contract.conftest import PostgresServer
from tests.contract.test_index import image

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        u = f"sqlite:///{tmp_path / 'index.db'}"
        upgrade(u)
        return u
    pg: PostgresServer = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("postgres_migrated_template")
    return pg.url(pg.create_database(template=template))


@pytest.fixture
async def audit(url: str, tmp_path: Path) -> AsyncIterator[AuditLog]:
    db = Database(url)
    yield AuditLog(db, tmp_path / "checkpoint.key")
    await db.close()


def ev(i: int, **kw: object) -> AuditEvent:
    return AuditEvent(action="manifest.pull", actor=f"user{i % 3}", client="127.0.0.1",
                      repository="team/model", reference="v1", digest=f"sha256:{i:064x}",
                      detail={"i": i}, **kw)  # type: ignore[arg-type]


async def test_concurrent_appends_form_one_chain(audit: AuditLog) -> None:
    await asyncio.gather(*(audit.record(ev(i)) for i in range(60)))
    report = await audit.verify()
    assert report.ok, report
    assert (report.checked, report.first_seq, report.last_seq) == (60, 1, 60)
    seqs = [r.seq for r in await audit.query(AuditQuery())]
    assert seqs == list(range(1, 61))


def test_appends_from_several_processes_form_one_chain(url: str, tmp_path: Path) -> None:
    script = (
        "import asyncio, pathlib, sys\n"
        "from stablemirror.index.db import Database\n"
        "from stablemirror.audit.log import AuditLog\n"
        "from stablemirror.index.audit_events import AuditEvent\n"
        "async def main():\n"
        "    db = Database(sys.argv[1])\n"
        "    log = AuditLog(db, pathlib.Path('unused.key'))\n"
        "    await asyncio.gather(*(log.record(AuditEvent(action='x', actor=sys.argv[2],"
        " detail={'i': i})) for i in range(40)))\n"
        "    await db.close()\n"
        "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url, f"p{n}"]) for n in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]

    async def check() -> None:
        db = Database(url)
        try:
            report = await AuditLog(db, tmp_path / "k.key").verify()
        finally:
            await db.close()
        assert report.ok and report.checked == 120, report

    asyncio.run(check())


async def test_index_changes_and_their_records_commit_together(url: str,
                                                               audit: AuditLog) -> None:
    await _changes_with_records(SqlIndex(audit.db), audit)


async def test_the_sqlite3_index_appends_to_the_same_chain(tmp_path: Path) -> None:
    """A node's sqlite3 index (index/lite_audit.py) writes the records SQLAlchemy's audit
    log reads back and verifies: same rows, same hashes, one chain."""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    upgrade(url)
    db = Database(url)
    lite = LiteDatabase(str(tmp_path / "index.db"))
    try:
        audit = AuditLog(db, tmp_path / "checkpoint.key")
        await audit.record(ev(0))  # a record SQLAlchemy appended first: the chain goes on
        await _changes_with_records(LiteIndex(lite), audit, first=1)
    finally:
        await lite.close()
        await db.close()


async def _changes_with_records(index: RegistryIndex, audit: AuditLog, first: int = 0
                                ) -> None:
    m = image(b"layer-one")
    push = AuditEvent(action="manifest.push", actor="alice", repository="team/a",
                      reference="latest", digest=str(m.digest))
    with pytest.raises(ManifestBlobUnknown):  # blobs missing: neither manifest nor record
        await index.put_manifest("team/a", m, ["latest"], audit=push)
    assert len(await audit.query(AuditQuery())) == first
    for d in m.blobs:
        await index.link_blob("team/a", d.digest, d.size,
                              audit=AuditEvent(action="blob.push", digest=str(d.digest)))
    await index.put_manifest("team/a", m, ["latest"], audit=push)
    m2 = image(b"layer-one", config=b'{"v":2}')
    await index.link_blob("team/a", m2.blobs[0].digest, m2.blobs[0].size)
    await index.put_manifest("team/a", m2, ["latest"],
                             audit=push.but(digest=str(m2.digest)))
    await index.delete_tag("team/a", "latest", audit=AuditEvent(action="tag.delete",
                                                                 repository="team/a",
                                                                 reference="latest"))
    assert not await index.delete_manifest(  # nothing deleted: nothing recorded
        "team/a", Digest.of(b"nope"), audit=AuditEvent(action="manifest.delete"))
    records = [r.event for r in await audit.query(AuditQuery())][first:]
    actions = [e.action for e in records]
    assert actions == ["blob.push", "blob.push", "manifest.push", "manifest.push",
                       "tag.move", "tag.delete"]
    move = records[4]
    assert move.detail == {"from": str(m.digest), "to": str(m2.digest)}
    assert records[5].digest == str(m2.digest)  # the tag's target, filled in by the index
    assert (await audit.verify()).ok


@pytest.mark.parametrize("tamper", ["edit", "remove-middle", "remove-last", "reorder"])
async def test_tampering_breaks_verification(audit: AuditLog, tamper: str) -> None:
    for i in range(10):
        await audit.record(ev(i))

    def change(c: Connection) -> None:
        if tamper == "edit":
            c.execute(update(audit_log).where(audit_log.c.seq == 4).values(actor="mallory"))
        elif tamper == "remove-middle":
            c.execute(delete(audit_log).where(audit_log.c.seq == 4))
        elif tamper == "remove-last":
            c.execute(delete(audit_log).where(audit_log.c.seq == 10))
        else:
            c.execute(update(audit_log).where(audit_log.c.seq == 4).values(seq=1000))

    await audit.db.write(change)
    report = await audit.verify()
    assert not report.ok
    expected = {"edit": 4, "remove-middle": 5, "remove-last": 10, "reorder": 5}[tamper]
    assert report.broken_seq == expected, report
    if tamper == "edit":
        assert "edited" in report.reason


async def test_prune_leaves_a_signed_checkpoint(audit: AuditLog, tmp_path: Path) -> None:
    old = time.time() - 200 * 86400
    for i in range(5):
        await audit.record(ev(i, time=old + i))
    for i in range(5, 8):
        await audit.record(ev(i))
    checkpoint = await audit.prune_older_than(time.time() - 180 * 86400)
    assert checkpoint is not None
    assert checkpoint.payload["pruned"] == 5 and checkpoint.through_seq == 5
    assert await audit.prune_older_than(time.time() - 180 * 86400) is None  # idempotent
    report = await audit.verify()
    assert report.ok and report.first_seq == 6 and report.checkpoints == 1, report
    remaining = [r.event.action for r in await audit.query(AuditQuery())]
    assert remaining[-1] == "audit.prune"  # pruning is itself on the record

    # A forged checkpoint (payload edited) no longer verifies against the key.
    async def forge(new_payload: str) -> None:
        await audit.db.write(lambda c: c.execute(
            update(audit_checkpoints).values(payload=new_payload)))

    original = await audit.db.read(lambda c: c.execute(
        select(audit_checkpoints.c.payload)).scalar_one())
    await forge(original.replace('"pruned":5', '"pruned":4'))
    forged = await audit.verify()
    assert not forged.ok and "signature" in forged.reason
    await forge(original)
    assert (await audit.verify()).ok
    # Another key (or none) cannot vouch for it.
    other = AuditLog(audit.db, tmp_path / "other.key")
    other.key()
    assert not (await other.verify()).ok
    assert not (await AuditLog(audit.db, tmp_path / "missing.key").verify()).ok


async def test_verify_reads_one_snapshot_without_blocking_appends(audit: AuditLog) -> None:
    """While a snapshot is open, another connection appends and commits (it would wait,
    then fail, if verify still held the chain's lock); the snapshot keeps seeing the state
    it started with, and the chain verifies both before and after."""
    for i in range(5):
        await audit.record(ev(i))
    db = audit.db

    def inside(c: Connection) -> tuple[int, int, float]:
        before = c.execute(select(audit_log.c.seq)).scalars().all()
        started = time.monotonic()
        with db.writer.begin() as w:  # a concurrent append from another connection
            append(w, ev(99))
        took = time.monotonic() - started
        after = c.execute(select(audit_log.c.seq)).scalars().all()
        assert after == before  # one snapshot: the commit is not visible here
        return len(before), len(after), took

    seen_before, seen_after, took = await db.snapshot(inside)
    assert (seen_before, seen_after) == (5, 5)
    assert took < 5, f"the append waited {took:.1f} s for the snapshot"
    report = await audit.verify()
    assert report.ok and report.checked == 6, report
