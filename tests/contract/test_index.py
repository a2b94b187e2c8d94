"""The index contract: every RegistryIndex backend (SQLite, PostgreSQL) behaves the same."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from stablemirror.index.db import Database
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_index import LiteIndex
from stablemirror.index.migrate import MIGRATIONS, upgrade
from stablemirror.index.protocol import RegistryIndex
from stablemirror.index.schema_fast import at_head_without_alembic
from stablemirror.index.sql import SqlIndex
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestBlobUnknown
from stablemirror.oci.manifest import Manifest, parse_manifest
from tests.contract.conftest import PostgresServer

BACKENDS = ["sqlite", "postgresql"]
# The stdlib-sqlite3 backend of a node cache (index/lite_*.py, docs/footprint.md): the same
# SQLite file as "sqlite", without SQLAlchemy. Suites of what a node uses run it too.
LITE = "sqlite3"
NODE_BACKENDS = [*BACKENDS, LITE]
INDEX_TABLES = {"repositories", "blobs", "repo_blobs", "manifests", "manifest_refs", "tags",
                "uploads"}


def _url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend in ("sqlite", LITE):
        url = f"sqlite:///{tmp_path / 'index.db'}"
        # A node creates its new index from the schema snapshot, as server/startup.py does
        # (Alembic when the snapshot is behind the migrations).
        if backend != LITE or not at_head_without_alembic(url):
            upgrade(url)
        return url
    pg: PostgresServer = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("postgres_migrated_template")
    return pg.url(pg.create_database(template=template))


def lite_db(url: str) -> LiteDatabase:
    """The sqlite3 backend's database on the file of a `sqlite:///` URL from `_url`."""
    return LiteDatabase(url.removeprefix("sqlite:///"))


def open_db(backend: str, url: str) -> Database | LiteDatabase:
    """The database `backend` works on, over `url` from `_url`."""
    return lite_db(url) if backend == LITE else Database(url)


@pytest.fixture(params=NODE_BACKENDS)
async def index(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[RegistryIndex]:
    url = _url(request.param, request, tmp_path)
    idx: RegistryIndex = (LiteIndex(lite_db(url)) if request.param == LITE
                          else SqlIndex(Database(url)))
    yield idx
    await idx.close()


# -- content helpers ------------------------------------------------------------------------
def blob(data: bytes, media_type: str = "application/octet-stream") -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


def image(*layers: bytes, config: bytes = b"{}", **extra: Any) -> Manifest:
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": blob(config, "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(x, "application/vnd.oci.image.layer.v1.tar") for x in layers],
        **extra,
    }
    return parse_manifest(json.dumps(body).encode(), mt.OCI_MANIFEST)


def index_of(*children: Manifest) -> Manifest:
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": c.media_type, "digest": str(c.digest), "size": len(c.raw)}
            for c in children
        ],
    }
    return parse_manifest(json.dumps(body).encode(), mt.OCI_INDEX)


def referrer(subject: Manifest, artifact_type: str, note: str) -> Manifest:
    return image(
        note.encode(),
        artifactType=artifact_type,
        subject={"mediaType": subject.media_type, "digest": str(subject.digest),
                 "size": len(subject.raw)},
        annotations={"note": note},
    )


async def link_all(index: RegistryIndex, repo: str, m: Manifest) -> None:
    for d in m.blobs:
        await index.link_blob(repo, d.digest, d.size)


async def push(index: RegistryIndex, repo: str, m: Manifest, *tags: str) -> Manifest:
    await link_all(index, repo, m)
    await index.put_manifest(repo, m, list(tags))
    return m


D1 = Digest.of(b"one")
D2 = Digest.of(b"two")


# -- blobs -----------------------------------------------------------------------------------
async def test_ping(index: RegistryIndex) -> None:
    await index.ping()  # a healthy index answers
    database = (index.db.path if isinstance(index, LiteIndex)
                else index.db.reader.url.database
                if isinstance(index, SqlIndex) and index.db.is_sqlite else None)
    if database:
        os.rename(database, database + ".gone")  # pooled connections still see the file
        with pytest.raises(sqlite3.OperationalError):
            await index.ping()


async def test_link_and_unlink_blob(index: RegistryIndex) -> None:
    assert await index.blob_size("a", D1) is None
    assert await index.blob_size_anywhere(D1) is None
    assert not await index.blob_known(str(D1))
    await index.link_blob("a", D1, 3)
    assert await index.blob_size("a", D1) == 3
    assert await index.blob_size("b", D1) is None  # per repository
    assert await index.blob_size_anywhere(D1) == 3
    assert await index.blob_known(str(D1))
    assert await index.repository_exists("a")
    assert not await index.repository_exists("b")

    await index.link_blob("a", D1, 3)  # idempotent
    await index.link_blob("b", D1, 3)  # one blob, two repositories
    assert await index.blob_size("b", D1) == 3

    assert await index.unlink_blob("a", D1)
    assert not await index.unlink_blob("a", D1)
    assert not await index.unlink_blob("nope", D1)
    assert await index.blob_size("a", D1) is None
    assert await index.blob_size("b", D1) == 3
    assert await index.blob_size_anywhere(D1) == 3  # the bytes are GC's business


async def test_sha512_blob(index: RegistryIndex) -> None:
    d = Digest.of(b"big", "sha512")
    await index.link_blob("r", d, 3)
    assert await index.blob_size("r", d) == 3
    assert await index.blob_size("r", Digest.of(b"big")) is None


async def test_large_blob_size(index: RegistryIndex) -> None:
    size = 3 * 1024**4  # 3 TiB: BIGINT, not INTEGER
    await index.link_blob("r", D1, size)
    assert await index.blob_size("r", D1) == size


# -- manifests -------------------------------------------------------------------------------
async def test_put_and_get_manifest(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"l1", b"l2"), "latest")
    by_digest = await index.get_manifest("r", m.digest)
    by_tag = await index.get_manifest("r", "latest")
    assert by_digest is not None and by_tag is not None
    assert by_digest.content == m.raw
    assert by_digest.digest == str(m.digest)
    assert by_digest.media_type == mt.OCI_MANIFEST
    assert by_tag == by_digest
    assert await index.get_manifest("other", m.digest) is None
    assert await index.get_manifest("r", "nope") is None
    assert await index.get_manifest("r", Digest.of(b"x")) is None


async def test_exact_bytes_kept(index: RegistryIndex) -> None:
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
         "config": blob(b"{}", mt.OCI_EMPTY), "layers": []},
        indent=3,
    ).encode() + b"\n\t \x20"
    m = parse_manifest(body, "")
    await push(index, "r", m)
    got = await index.get_manifest("r", m.digest)
    assert got is not None and got.content == body


async def test_put_manifest_missing_blob_stores_nothing(index: RegistryIndex) -> None:
    m = image(b"present", b"missing")
    await index.link_blob("other", m.blobs[2].digest, m.blobs[2].size)  # elsewhere only
    await index.link_blob("r2", m.blobs[0].digest, m.blobs[0].size)
    for d in m.blobs[:2]:
        await index.link_blob("r", d.digest, d.size)
    with pytest.raises(ManifestBlobUnknown) as info:
        await index.put_manifest("r", m, ["latest"])
    assert info.value.detail["digest"] == str(m.blobs[2].digest)
    assert await index.get_manifest("r", m.digest) is None
    assert await index.get_manifest("r", "latest") is None
    assert await index.list_tags("r", None, None) == []

    # a repository that only appears through the failed manifest is not created
    with pytest.raises(ManifestBlobUnknown):
        await index.put_manifest("fresh", m, ["latest"])
    assert not await index.repository_exists("fresh")
    assert await index.list_tags("fresh", None, None) is None
    assert "fresh" not in await index.list_repositories(None, None)


async def test_index_manifest_requires_children(index: RegistryIndex) -> None:
    a = await push(index, "r", image(b"amd64"))
    b = image(b"arm64")
    await link_all(index, "r", b)
    idx = index_of(a, b)
    with pytest.raises(ManifestBlobUnknown):
        await index.put_manifest("r", idx, ["multi"])
    assert await index.get_manifest("r", idx.digest) is None
    assert await index.get_manifest("r", "multi") is None
    await index.put_manifest("r", b, [])
    await index.put_manifest("r", idx, ["multi"])
    got = await index.get_manifest("r", "multi")
    assert got is not None and got.media_type == mt.OCI_INDEX and got.content == idx.raw


async def test_child_manifest_in_other_repository_does_not_count(index: RegistryIndex) -> None:
    a = await push(index, "elsewhere", image(b"x"))
    with pytest.raises(ManifestBlobUnknown):
        await index.put_manifest("r", index_of(a), [])


async def test_put_same_manifest_twice(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"l"), "a")
    await index.put_manifest("r", m, ["b"])
    assert await index.list_tags("r", None, None) == ["a", "b"]


async def test_tags_upsert_and_move(index: RegistryIndex) -> None:
    one = await push(index, "r", image(b"one"), "latest", "v1")
    two = await push(index, "r", image(b"two"), "latest", "v2")
    latest = await index.get_manifest("r", "latest")
    v1 = await index.get_manifest("r", "v1")
    assert latest is not None and latest.digest == str(two.digest)
    assert v1 is not None and v1.digest == str(one.digest)
    assert await index.list_tags("r", None, None) == ["latest", "v1", "v2"]
    # the old manifest is still there by digest
    assert await index.get_manifest("r", one.digest) is not None


async def test_same_tag_in_two_repositories(index: RegistryIndex) -> None:
    a = await push(index, "a", image(b"a"), "latest")
    b = await push(index, "b", image(b"b"), "latest")
    got_a = await index.get_manifest("a", "latest")
    got_b = await index.get_manifest("b", "latest")
    assert got_a is not None and got_a.digest == str(a.digest)
    assert got_b is not None and got_b.digest == str(b.digest)


async def test_list_tags_pagination(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"x"))
    tags = [f"t{i:02d}" for i in range(25)] + ["A", "_z", "latest"]
    await index.put_manifest("r", m, tags)
    expected = sorted(tags)
    assert await index.list_tags("r", None, None) == expected
    pages: list[str] = []
    last: str | None = None
    for _ in range(20):
        page = await index.list_tags("r", 7, last)
        assert page is not None
        assert len(page) <= 7
        if not page:
            break
        pages += page
        last = page[-1]
    assert pages == expected
    assert await index.list_tags("r", 3, "t10") == ["t11", "t12", "t13"]
    assert await index.list_tags("r", None, "t23") == ["t24"]
    assert await index.list_tags("r", 5, "zzz") == []
    assert await index.list_tags("r", 0, None) == []
    assert await index.list_tags("unknown", None, None) is None


@pytest.mark.parametrize("last", ["\x00", "v05\x00", "v05\x00zz", "\x00\x00a", "x" * 8000,
                                  "v05\r\n", "' OR 1=1 --", "%"])
async def test_listings_after_a_hostile_last(index: RegistryIndex, last: str) -> None:
    """`last` is any string a client sent; the answer is what comes after it, on every
    backend (PostgreSQL text cannot even hold a NUL)."""
    m = await push(index, "r", image(b"x"))
    tags = ["a", "v05", "v05.1", "v06"]
    await index.put_manifest("r", m, tags)
    await index.link_blob("v05/z", Digest.of(b"x"), 1)
    assert await index.list_tags("r", None, last) == [t for t in tags if t > last]
    assert await index.list_tags("r", 1, last) == [t for t in tags if t > last][:1]
    repositories = ["r", "v05/z"]
    assert await index.list_repositories(None, last) == [r for r in repositories if r > last]


async def test_catalog_pagination(index: RegistryIndex) -> None:
    names = [f"ns{i % 3}/repo{i:02d}" for i in range(12)] + ["a", "z/z", "a-b", "a/b"]
    for name in names:
        await index.link_blob(name, D1, 3)
    expected = sorted(names)
    assert await index.list_repositories(None, None) == expected
    seen: list[str] = []
    last: str | None = None
    for _ in range(20):
        page = await index.list_repositories(5, last)
        if not page:
            break
        assert len(page) <= 5
        seen += page
        last = page[-1]
    assert seen == expected
    assert await index.list_repositories(2, "ns1/repo04") == expected[
        expected.index("ns1/repo04") + 1 : expected.index("ns1/repo04") + 3
    ]
    assert await index.list_repositories(10, "zzz") == []


async def test_delete_manifest_removes_its_tags(index: RegistryIndex) -> None:
    keep = await push(index, "r", image(b"keep"), "stay")
    gone = await push(index, "r", image(b"gone"), "latest", "v1")
    assert await index.delete_manifest("r", gone.digest)
    assert await index.get_manifest("r", gone.digest) is None
    assert await index.get_manifest("r", "latest") is None
    assert await index.list_tags("r", None, None) == ["stay"]
    assert await index.get_manifest("r", keep.digest) is not None
    assert not await index.delete_manifest("r", gone.digest)
    assert not await index.delete_manifest("nope", gone.digest)


async def test_delete_manifest_only_in_its_repository(index: RegistryIndex) -> None:
    m = image(b"shared")
    await push(index, "a", m, "latest")
    await push(index, "b", m, "latest")
    assert await index.delete_manifest("a", m.digest)
    assert await index.get_manifest("b", "latest") is not None


async def test_delete_tag(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"x"), "a", "b")
    assert await index.delete_tag("r", "a")
    assert not await index.delete_tag("r", "a")
    assert not await index.delete_tag("nope", "a")
    assert await index.list_tags("r", None, None) == ["b"]
    assert await index.get_manifest("r", m.digest) is not None


# -- referrers -------------------------------------------------------------------------------
async def test_referrers_with_artifact_type_filter(index: RegistryIndex) -> None:
    subject = await push(index, "r", image(b"model weights"), "v1")
    sig = await push(index, "r", referrer(subject, "application/vnd.dev.sig", "sig"))
    sbom = await push(index, "r", referrer(subject, "application/spdx+json", "sbom"))
    sig2 = await push(index, "r", referrer(subject, "application/vnd.dev.sig", "sig2"))
    # a referrer of the same subject in another repository is not listed
    await push(index, "other", referrer(subject, "application/vnd.dev.sig", "elsewhere"))
    # an unrelated manifest
    await push(index, "r", image(b"unrelated"))

    everything = await index.referrers("r", subject.digest, None)
    assert {r.digest for r in everything} == {str(sig.digest), str(sbom.digest),
                                              str(sig2.digest)}
    by_digest = {r.digest: r for r in everything}
    r = by_digest[str(sbom.digest)]
    assert r.media_type == mt.OCI_MANIFEST
    assert r.size == len(sbom.raw)
    assert r.artifact_type == "application/spdx+json"
    assert r.annotations == {"note": "sbom"}

    sigs = await index.referrers("r", subject.digest, "application/vnd.dev.sig")
    assert {x.digest for x in sigs} == {str(sig.digest), str(sig2.digest)}
    assert await index.referrers("r", subject.digest, "application/none") == []
    assert await index.referrers("r", Digest.of(b"nothing"), None) == []
    assert await index.referrers("unknown", subject.digest, None) == []
    for hostile in ("\x00", "application/vnd.dev.sig\x00", "\x00application/vnd.dev.sig"):
        assert await index.referrers("r", subject.digest, hostile) == []  # no backend error


async def test_referrer_artifact_type_from_config(index: RegistryIndex) -> None:
    subject = await push(index, "r", image(b"s"))
    m = image(
        b"w",
        config=b'{"model": 1}',
        subject={"mediaType": subject.media_type, "digest": str(subject.digest),
                 "size": len(subject.raw)},
    )
    body = json.loads(m.raw)
    body["config"]["mediaType"] = "application/vnd.cncf.model.config.v1+json"
    m = parse_manifest(json.dumps(body).encode(), "")
    await push(index, "r", m)
    (found,) = await index.referrers("r", subject.digest, None)
    assert found.artifact_type == "application/vnd.cncf.model.config.v1+json"
    assert found.annotations is None
    assert await index.referrers(
        "r", subject.digest, "application/vnd.cncf.model.config.v1+json"
    ) == [found]


async def test_referrer_of_missing_subject_is_accepted(index: RegistryIndex) -> None:
    ghost = image(b"never pushed")
    ref = await push(index, "r", referrer(ghost, "application/x", "n"))
    (found,) = await index.referrers("r", ghost.digest, None)
    assert found.digest == str(ref.digest)


# -- uploads ---------------------------------------------------------------------------------
async def test_uploads(index: RegistryIndex) -> None:
    before = time.time()
    await index.create_upload("r", "a" * 32)
    await index.create_upload("other/repo", "b" * 32)
    u = await index.get_upload("a" * 32)
    assert u is not None
    assert u.id == "a" * 32 and u.repository == "r"
    assert before - 1 <= u.created_at <= time.time() + 1
    assert await index.get_upload("c" * 32) is None
    assert sorted(await index.uploads_older_than(time.time() + 10)) == ["a" * 32, "b" * 32]
    assert await index.uploads_older_than(before - 10) == []
    await index.delete_upload("a" * 32)
    assert await index.get_upload("a" * 32) is None
    await index.delete_upload("a" * 32)  # idempotent
    assert await index.uploads_older_than(time.time() + 10) == ["b" * 32]


# -- garbage collection queries ----------------------------------------------------------------
async def test_unreferenced_blobs(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"layer"), "v1")
    await index.link_blob("r", D1, 3)  # unreferenced
    later = time.time() + 5
    earlier = time.time() - 3600
    found = dict(await index.unreferenced_blobs(later))
    assert found == {str(D1): 3}
    for d in m.blobs:
        assert str(d.digest) not in found
    assert await index.unreferenced_blobs(earlier) == []  # everything is fresh


async def test_unreferenced_after_manifest_delete(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"layer"), "v1")
    assert await index.unreferenced_blobs(time.time() + 5) == []
    await index.delete_manifest("r", m.digest)
    found = dict(await index.unreferenced_blobs(time.time() + 5))
    assert found == {str(d.digest): d.size for d in m.blobs}


async def test_referenced_from_another_repository_counts(index: RegistryIndex) -> None:
    m = image(b"shared layer")
    await push(index, "a", m)
    await link_all(index, "b", m)
    await index.unlink_blob("a", m.blobs[1].digest)
    assert await index.unreferenced_blobs(time.time() + 5) == []
    assert not await index.forget_blob_if_unreferenced(str(m.blobs[1].digest), time.time() + 5)


async def test_forget_blob_if_unreferenced(index: RegistryIndex) -> None:
    m = await push(index, "r", image(b"layer"), "v1")
    layer = str(m.blobs[1].digest)
    await index.link_blob("r", D1, 3)
    await index.link_blob("r2", D1, 3)
    await index.link_blob("r", D2, 3)

    # referenced: refused
    assert not await index.forget_blob_if_unreferenced(layer, time.time() + 5)
    assert await index.blob_known(layer)
    # fresh (pushed after the cutoff): refused
    assert not await index.forget_blob_if_unreferenced(str(D1), time.time() - 3600)
    assert await index.blob_size("r", D1) == 3
    # unknown: nothing to do
    assert not await index.forget_blob_if_unreferenced(str(Digest.of(b"?")), time.time() + 5)
    # idle and unreferenced: forgotten everywhere
    assert await index.forget_blob_if_unreferenced(str(D1), time.time() + 5)
    assert not await index.blob_known(str(D1))
    assert await index.blob_size("r", D1) is None
    assert await index.blob_size("r2", D1) is None
    assert await index.blob_size_anywhere(D1) is None
    assert await index.blob_size("r", D2) == 3  # others untouched
    assert not await index.forget_blob_if_unreferenced(str(D1), time.time() + 5)


async def test_relink_makes_blob_fresh_again(index: RegistryIndex) -> None:
    await index.link_blob("r", D1, 3)
    cutoff = time.time() + 0.001
    await asyncio.sleep(0.01)
    await index.link_blob("other", D1, 3)  # a mount or re-push bumps pushed_at
    assert await index.unreferenced_blobs(cutoff) == []
    assert not await index.forget_blob_if_unreferenced(str(D1), cutoff)


# -- migrations --------------------------------------------------------------------------------
def _alembic(url: str, fn: Any, revision: str) -> None:
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, revision)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.url(pg.create_database())


async def test_migrations_up_down_up(empty_url: str) -> None:
    upgrade(empty_url)
    after_first = _tables(empty_url)
    assert after_first >= INDEX_TABLES
    assert "alembic_version" in after_first
    upgrade(empty_url)  # idempotent
    assert _tables(empty_url) == after_first

    _alembic(empty_url, command.downgrade, "base")
    assert _tables(empty_url) - {"alembic_version"} == set()

    upgrade(empty_url)
    assert _tables(empty_url) == after_first
    idx = SqlIndex(Database(empty_url))
    try:
        m = await push(idx, "r", image(b"after migrations"), "latest")
        got = await idx.get_manifest("r", "latest")
        assert got is not None and got.content == m.raw
    finally:
        await idx.close()


def test_postgres_url_is_a_real_server(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            version = conn.exec_driver_sql("SHOW server_version_num").scalar()
            assert version is not None and int(version) >= 150000
    finally:
        engine.dispose()


async def test_catalog_lists_only_repositories_with_content(index: RegistryIndex) -> None:
    await index.create_upload("only/upload", "c" * 32)
    await index.create_upload("abandoned", "d" * 32)
    await index.delete_upload("d" * 32)
    await index.link_blob("has/blob", D1, 3)
    await push(index, "has/manifest", image(b"m"))
    assert await index.list_repositories(None, None) == ["has/blob", "has/manifest"]
    assert await index.list_repositories(1, None) == ["has/blob"]
    assert await index.list_repositories(5, "has/blob") == ["has/manifest"]
    # an upload session is still found through its repository
    upload = await index.get_upload("c" * 32)
    assert upload is not None and upload.repository == "only/upload"
