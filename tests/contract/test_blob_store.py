"""The blob store contract: every BlobStore backend behaves the same.

Backends are a list of factories: each builds a store over a location, and building a
second store over the same location is what a restart (or another worker process) sees.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    UploadRangeInvalid,
)
from stablemirror.store.config import S3Settings
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.hot_config import HotTierSettings
from stablemirror.store.protocol import BlobStore
from stablemirror.store.s3 import S3BlobStore
from stablemirror.store.tiered import TieredBlobStore
from tests.support.seaweed import SeaweedS3

CONTRACT_BUCKET = "contract"


@dataclass(frozen=True)
class Backend:
    """`open(location, request)`: a store over `location` (a fresh local directory per
    test); called again, it is what a restart or another worker process sees. `request`
    gives access to session fixtures (a real SeaweedFS for S3)."""

    name: str
    open: Callable[[Path, pytest.FixtureRequest], BlobStore]


def open_filesystem(location: Path, request: pytest.FixtureRequest) -> BlobStore:
    return FilesystemBlobStore(location)


def open_s3(location: Path, request: pytest.FixtureRequest) -> BlobStore:
    """A store in the session's SeaweedFS, under a key prefix of its own per test."""
    seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
    marker = location / "s3-prefix"
    if not marker.exists():
        marker.write_text(f"t-{uuid.uuid4().hex[:12]}/")
    # 5 MiB parts (S3's minimum) so the suite's few-MiB uploads cross part boundaries.
    return S3BlobStore(S3Settings(endpoint=seaweed.endpoint, bucket=CONTRACT_BUCKET,
                                  prefix=marker.read_text(), create_bucket=True,
                                  part_size_mib=5))


def hot_over(cold: Callable[[Path, pytest.FixtureRequest], BlobStore]
             ) -> Callable[[Path, pytest.FixtureRequest], BlobStore]:
    """The hot tier over another backend; every blob read is promoted at once, so the
    reads below exercise the promotion and the hot copies too."""
    def open_tiered(location: Path, request: pytest.FixtureRequest) -> BlobStore:
        (location / "cold").mkdir(exist_ok=True)
        return TieredBlobStore(cold(location / "cold", request), location / "hot",
                               HotTierSettings(path=location / "hot", promote_after=1))
    return open_tiered


BACKENDS = [
    Backend("filesystem", open_filesystem),
    Backend("s3", open_s3),
    Backend("tiered-filesystem", hot_over(open_filesystem)),
    Backend("tiered-s3", hot_over(open_s3)),
]


@dataclass
class Harness:
    backend: Backend
    location: Path
    store: BlobStore
    request: pytest.FixtureRequest
    opened: list[BlobStore]

    def reopen(self) -> BlobStore:
        store = self.backend.open(self.location, self.request)
        self.opened.append(store)
        return store


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    backend: Backend = request.param
    location = tmp_path / "store"
    location.mkdir()
    store = backend.open(location, request)
    cold = store.cold if isinstance(store, TieredBlobStore) else store
    if isinstance(cold, S3BlobStore):
        await cold.s3.ensure_bucket(create=True)
    harness = Harness(backend, location, store, request, [store])
    yield harness
    for opened in harness.opened:
        await opened.aclose()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        await asyncio.sleep(0)
        yield p


class Interrupted(Exception):
    pass


async def breaking(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    """Yields `parts`, then fails: a client that went away mid-chunk."""
    for p in parts:
        yield p
    raise Interrupted("client went away")


def new_id() -> str:
    return uuid.uuid4().hex


async def read_all(store: BlobStore, d: Digest, offset: int = 0, length: int | None = None
                   ) -> bytes:
    out = bytearray()
    async for part in store.read(d, offset, length):
        out += part
    return bytes(out)


async def listed(store: BlobStore) -> dict[Digest, float]:
    return {d: mtime async for d, mtime in store.list_blobs()}


async def uploads(store: BlobStore) -> set[str]:
    return {u async for u, _ in store.list_uploads()}


async def put(store: BlobStore, data: bytes, algorithm: str = "sha256") -> Digest:
    d = Digest.of(data, algorithm)
    uid = new_id()
    await store.upload_create(uid)
    await store.upload_append(uid, 0, chunks(data))
    assert await store.upload_verify(uid, d) == len(data)
    await store.upload_publish(uid, d)
    return d


# -- the upload life cycle ---------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_upload_create_append_verify_publish(h: Harness, algorithm: str) -> None:
    s = h.store
    parts = [b"a" * 1000, b"", b"b" * (1 << 20) + b"c", b"tail"]
    data = b"".join(parts)
    d = Digest.of(data, algorithm)
    uid = new_id()
    await s.upload_create(uid)
    assert await s.upload_size(uid) == 0
    assert uid in await uploads(s)
    size = 0
    for p in parts:
        size = await s.upload_append(uid, size, chunks(p[: len(p) // 2], p[len(p) // 2 :]))
        assert await s.upload_size(uid) == size
    assert size == len(data)
    assert await s.stat(d) is None  # staged bytes are invisible
    assert d not in await listed(s)
    assert await s.upload_verify(uid, d) == len(data)
    assert await s.stat(d) is None  # verified but not yet published
    await s.upload_publish(uid, d)

    assert await s.stat(d) == len(data)
    assert await read_all(s, d) == data
    assert d in await listed(s)
    assert uid not in await uploads(s)
    with pytest.raises(BlobUploadUnknown):
        await s.upload_size(uid)
    path = s.local_path(d)
    if path is not None:
        assert path.read_bytes() == data


async def test_empty_blob(h: Harness) -> None:
    d = await put(h.store, b"")
    assert await h.store.stat(d) == 0
    assert await read_all(h.store, d) == b""


async def test_read_ranges(h: Harness) -> None:
    data = bytes(range(256)) * 9000  # > 2 read chunks
    d = await put(h.store, data)
    assert await read_all(h.store, d, 0, 10) == data[:10]
    assert await read_all(h.store, d, 1000, None) == data[1000:]
    assert await read_all(h.store, d, (1 << 20) - 3, 7) == data[(1 << 20) - 3 : (1 << 20) + 4]
    assert await read_all(h.store, d, len(data) - 1, 100) == data[-1:]
    assert await read_all(h.store, d, 5, 0) == b""


async def test_read_unknown_blob(h: Harness) -> None:
    with pytest.raises(BlobUnknown):
        await read_all(h.store, Digest.of(b"nothing"))
    assert await h.store.stat(Digest.of(b"nothing")) is None


async def test_wrong_digest_is_rejected_and_nothing_visible(h: Harness) -> None:
    s = h.store
    data = b"the real bytes"
    claimed = Digest.of(b"something else")
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(data))
    with pytest.raises(DigestInvalid) as info:
        await s.upload_verify(uid, claimed)
    assert info.value.detail["actual"] == str(Digest.of(data))
    assert await s.stat(claimed) is None
    assert await s.stat(Digest.of(data)) is None
    assert await listed(s) == {}
    with pytest.raises(BlobUnknown):
        await read_all(s, claimed)
    # the right digest still verifies: a failed check changes nothing
    assert await s.upload_verify(uid, Digest.of(data)) == len(data)
    await s.upload_abort(uid)
    assert await listed(s) == {}


async def test_wrong_algorithm_is_a_wrong_digest(h: Harness) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"x"))
    sha512_with_sha256_hex = Digest("sha512", Digest.of(b"x").hex + "0" * 64)
    with pytest.raises(DigestInvalid):
        await s.upload_verify(uid, sha512_with_sha256_hex)
    assert await s.upload_verify(uid, Digest.of(b"x", "sha512")) == 1


@pytest.mark.parametrize("offset_delta", [-1, 1, 1000])
async def test_append_at_wrong_offset(h: Harness, offset_delta: int) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"0123456789"))
    with pytest.raises(UploadRangeInvalid):
        await s.upload_append(uid, 10 + offset_delta, chunks(b"XYZ"))
    assert await s.upload_size(uid) == 10
    await s.upload_append(uid, 10, chunks(b"abc"))
    d = Digest.of(b"0123456789abc")
    assert await s.upload_verify(uid, d) == 13
    await s.upload_publish(uid, d)
    assert await read_all(s, d) == b"0123456789abc"


async def test_append_at_zero_to_non_empty_upload(h: Harness) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"first"))
    with pytest.raises(UploadRangeInvalid):
        await s.upload_append(uid, 0, chunks(b"again"))
    assert await s.upload_size(uid) == 5
    assert await s.upload_verify(uid, Digest.of(b"first")) == 5


@pytest.mark.parametrize("sent_before_failure", [0, 1, 3])
async def test_interrupted_append_leaves_previous_size(
    h: Harness, sent_before_failure: int
) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"committed-"))
    with pytest.raises(Interrupted):
        await s.upload_append(uid, 10, breaking([b"partial" * 1000] * sent_before_failure))
    assert await s.upload_size(uid) == 10
    # the upload goes on from where it was, and the digest covers only what was kept
    await s.upload_append(uid, 10, chunks(b"rest"))
    d = Digest.of(b"committed-rest")
    assert await s.upload_verify(uid, d) == 14
    await s.upload_publish(uid, d)
    assert await read_all(s, d) == b"committed-rest"


async def test_interrupted_first_append(h: Harness) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    with pytest.raises(Interrupted):
        await s.upload_append(uid, 0, breaking([b"x" * 5000, b"y" * 5000]))
    assert await s.upload_size(uid) == 0
    await s.upload_append(uid, 0, chunks(b"clean"))
    assert await s.upload_verify(uid, Digest.of(b"clean")) == 5


async def test_cancelled_append_leaves_previous_size(h: Harness) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"base"))
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"some bytes"
        gate.set()
        await asyncio.sleep(3600)
        yield b"never"

    task = asyncio.create_task(s.upload_append(uid, 4, slow()))
    await asyncio.wait_for(gate.wait(), 10)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await s.upload_size(uid) == 4
    assert await s.upload_verify(uid, Digest.of(b"base")) == 4


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_rehash_after_restart(h: Harness, algorithm: str) -> None:
    first = h.store
    uid = new_id()
    await first.upload_create(uid)
    await first.upload_append(uid, 0, chunks(b"before restart|"))

    second = h.reopen()  # a new process over the same storage
    assert await second.upload_size(uid) == 15
    assert uid in await uploads(second)
    await second.upload_append(uid, 15, chunks(b"after restart"))
    data = b"before restart|after restart"
    d = Digest.of(data, algorithm)
    with pytest.raises(DigestInvalid):
        await second.upload_verify(uid, Digest.of(b"before restart|", algorithm))
    assert await second.upload_verify(uid, d) == len(data)
    await second.upload_publish(uid, d)
    assert await first.stat(d) == len(data)
    assert await read_all(first, d) == data


async def test_alternating_processes_never_use_a_stale_hash(h: Harness) -> None:
    """Two workers take turns on one upload; each one's cached hash state goes stale."""
    a, b = h.store, h.reopen()
    uid = new_id()
    await a.upload_create(uid)
    await a.upload_append(uid, 0, chunks(b"A1"))
    await b.upload_append(uid, 2, chunks(b"B1"))
    await a.upload_append(uid, 4, chunks(b"A2"))
    data = b"A1B1A2"
    assert await b.upload_verify(uid, Digest.of(data)) == 6
    assert await a.upload_verify(uid, Digest.of(data)) == 6
    with pytest.raises(DigestInvalid):
        await a.upload_verify(uid, Digest.of(b"A1A2"))
    await a.upload_publish(uid, Digest.of(data))
    assert await read_all(b, Digest.of(data)) == data


async def test_many_sized_chunks_across_processes(h: Harness) -> None:
    """Chunks smaller and larger than any part size, taking turns between two processes
    and interrupted on the way: the bytes and the size come out exactly as acknowledged.
    (On S3: tails shorter than a part are carried over, parts are 5 MiB.)"""
    a, b = h.store, h.reopen()
    data = os.urandom(13 * (1 << 20) + 12345)
    cuts = [0, 700_000, 1 << 20, 6 << 20, 6 * (1 << 20) + 1, 11 << 20, len(data)]
    uid = new_id()
    await a.upload_create(uid)
    for i, (start, end) in enumerate(itertools.pairwise(cuts)):
        s = (a, b)[i % 2]
        with pytest.raises(Interrupted):  # a PATCH that breaks off halfway is dropped
            await s.upload_append(uid, start, breaking([data[start:(start + end) // 2]]))
        assert await s.upload_size(uid) == start
        piece = data[start:end]
        size = await s.upload_append(uid, start, chunks(*(piece[j:j + 300_000] for j in
                                                          range(0, len(piece), 300_000))))
        assert size == end
    d = Digest.of(data)
    assert await a.upload_verify(uid, d) == len(data)
    await a.upload_publish(uid, d)
    assert await read_all(b, d) == data
    assert await read_all(b, d, (5 << 20) - 10, 20) == data[(5 << 20) - 10:(5 << 20) + 10]


async def test_one_process_hashes_what_it_received(h: Harness) -> None:
    """Received in order by one process, then verified by another: same answer."""
    a = h.store
    data = os.urandom(7 << 20)
    uid = new_id()
    await a.upload_create(uid)
    await a.upload_append(uid, 0, chunks(data[: 3 << 20], data[3 << 20:]))
    b = h.reopen()
    with pytest.raises(DigestInvalid):
        await b.upload_verify(uid, Digest.of(data[:-1]))
    assert await b.upload_verify(uid, Digest.of(data)) == len(data)
    assert await a.upload_verify(uid, Digest.of(data)) == len(data)
    await b.upload_publish(uid, Digest.of(data))
    assert await read_all(a, Digest.of(data)) == data


@pytest.mark.parametrize("first_size", [3000, 6 << 20])
async def test_append_after_a_failed_verify(h: Harness, first_size: int) -> None:
    """A PUT whose digest did not match, then more bytes and the right digest (on S3 the
    failed check already assembled the parts: they become the start of the upload again)."""
    s = h.store
    data = os.urandom(first_size + 7000)
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(data[:first_size]))
    with pytest.raises(DigestInvalid):
        await s.upload_verify(uid, Digest.of(data))
    assert await s.upload_size(uid) == first_size
    await h.reopen().upload_append(uid, first_size, chunks(data[first_size:]))
    assert await s.upload_verify(uid, Digest.of(data)) == len(data)
    await s.upload_publish(uid, Digest.of(data))
    assert await read_all(s, Digest.of(data)) == data


async def test_racing_appends_one_wins_whole(h: Harness) -> None:
    """Two processes PATCH the same offset at once: one of them fails with
    UploadRangeInvalid, and the upload holds exactly the other one's bytes."""
    a, b = h.store, h.reopen()
    uid = new_id()
    await a.upload_create(uid)
    await a.upload_append(uid, 0, chunks(b"base|"))
    gate = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield b"from a, "
        await asyncio.wait_for(gate.wait(), 20)
        yield b"late"

    first = asyncio.create_task(a.upload_append(uid, 5, held()))
    await asyncio.sleep(0.2)  # a is mid-PATCH
    try:
        second: int | BaseException = await b.upload_append(uid, 5, chunks(b"from b"))
    except UploadRangeInvalid as e:
        second = e
    gate.set()
    try:
        won_first: int | BaseException = await first
    except UploadRangeInvalid as e:
        won_first = e
    outcomes = [won_first, second]
    assert sum(isinstance(o, UploadRangeInvalid) for o in outcomes) == 1, outcomes
    data = b"base|from a, late" if isinstance(second, BaseException) else b"base|from b"
    assert await a.upload_size(uid) == len(data)
    assert await b.upload_verify(uid, Digest.of(data)) == len(data)
    await b.upload_publish(uid, Digest.of(data))
    assert await read_all(a, Digest.of(data)) == data


async def test_dedupe_same_digest_twice(h: Harness) -> None:
    s = h.store
    data = b"shared layer" * 100
    d = Digest.of(data)
    ids = [new_id(), new_id()]
    for uid in ids:
        await s.upload_create(uid)
        await s.upload_append(uid, 0, chunks(data))
    for uid in ids:
        assert await s.upload_verify(uid, d) == len(data)
        await s.upload_publish(uid, d)
    assert await s.stat(d) == len(data)
    assert await read_all(s, d) == data
    assert list((await listed(s)).keys()) == [d]
    assert await uploads(s) == set()
    d2 = await put(s, data)  # and once more, after it is committed
    assert d2 == d
    assert list((await listed(s)).keys()) == [d]


async def test_list_blobs(h: Harness) -> None:
    s = h.store
    assert await listed(s) == {}
    before = time.time()
    blobs = {await put(s, f"blob {i}".encode(), "sha512" if i % 2 else "sha256")
             for i in range(6)}
    pending = new_id()
    await s.upload_create(pending)
    await s.upload_append(pending, 0, chunks(b"not committed"))
    found = await listed(s)
    assert set(found) == blobs
    for mtime in found.values():
        assert before - 5 <= mtime <= time.time() + 5
    assert set(await listed(h.reopen())) == blobs


async def test_list_uploads(h: Harness) -> None:
    s = h.store
    ids = {new_id() for _ in range(3)}
    for uid in ids:
        await s.upload_create(uid)
    assert await uploads(s) == ids
    assert await uploads(h.reopen()) == ids
    gone = ids.pop()
    await s.upload_abort(gone)
    assert await uploads(s) == ids


async def test_abort(h: Harness) -> None:
    s = h.store
    uid = new_id()
    await s.upload_create(uid)
    await s.upload_append(uid, 0, chunks(b"abandoned"))
    await s.upload_abort(uid)
    with pytest.raises(BlobUploadUnknown):
        await s.upload_size(uid)
    with pytest.raises(BlobUploadUnknown):
        await s.upload_append(uid, 0, chunks(b"x"))
    with pytest.raises(BlobUploadUnknown):
        await s.upload_verify(uid, Digest.of(b"abandoned"))
    await s.upload_abort(uid)  # idempotent
    assert await listed(s) == {}


@pytest.mark.parametrize(
    "upload_id",
    ["", "../../etc", "a" * 31, "A" * 32, "../" + "a" * 29, "a" * 32 + "/../x", "g" * 32],
)
async def test_unknown_or_hostile_upload_ids(h: Harness, upload_id: str) -> None:
    s = h.store
    with pytest.raises(BlobUploadUnknown):
        await s.upload_size(upload_id)
    with pytest.raises(BlobUploadUnknown):
        await s.upload_append(upload_id, 0, chunks(b"x"))
    with pytest.raises(BlobUploadUnknown):
        await s.upload_verify(upload_id, Digest.of(b"x"))


async def test_unknown_upload(h: Harness) -> None:
    with pytest.raises(BlobUploadUnknown):
        await h.store.upload_size(new_id())


async def test_delete(h: Harness) -> None:
    s = h.store
    keep = await put(s, b"keep")
    d = await put(s, b"delete me")
    assert await s.delete(d)
    assert await s.stat(d) is None
    assert set(await listed(s)) == {keep}
    with pytest.raises(BlobUnknown):
        await read_all(s, d)
    assert not await s.delete(d)
    assert await s.stat(keep) == 4
    again = await put(s, b"delete me")  # can come back
    assert again == d and await s.stat(d) == 9


async def test_trash_and_restore(h: Harness) -> None:
    s = h.store
    d = await put(s, b"maybe garbage")
    trashed = await s.trash(d, new_id())
    assert trashed is not None
    assert await s.stat(d) is None
    assert d not in await listed(s)
    with pytest.raises(BlobUnknown):
        await read_all(s, d)
    await s.restore(d, trashed)
    assert await s.stat(d) == 13
    assert await read_all(s, d) == b"maybe garbage"
    assert d in await listed(s)


async def test_trash_missing_blob(h: Harness) -> None:
    assert await h.store.trash(Digest.of(b"never"), new_id()) is None


async def test_restore_when_a_new_copy_arrived(h: Harness) -> None:
    s = h.store
    d = await put(s, b"raced")
    trashed = await s.trash(d, new_id())
    assert trashed is not None
    await put(s, b"raced")  # a push while GC held the old copy aside
    await s.restore(d, trashed)
    assert await s.stat(d) == 5
    assert await read_all(s, d) == b"raced"
    assert list((await listed(s)).keys()) == [d]
    await s.restore(d, trashed)  # the trashed copy is gone: restoring again is a no-op
    assert await read_all(s, d) == b"raced"


async def test_trashed_blob_can_be_dropped(h: Harness) -> None:
    s = h.store
    d = await put(s, b"garbage")
    trashed = await s.trash(d, new_id())
    assert trashed is not None
    await s.drop_trashed(trashed)
    assert await s.stat(d) is None
    assert await listed(s) == {}
    await s.restore(d, trashed)  # nothing left to bring back
    assert await s.stat(d) is None


async def test_quarantine_moves_a_blob_out_of_sight(h: Harness) -> None:
    s = h.store
    d = await put(s, b"corrupt, say")
    moved = await s.quarantine(d, new_id())
    assert moved is not None
    assert await s.stat(d) is None
    assert d not in await listed(s)
    with pytest.raises(BlobUnknown):
        await read_all(s, d)
    assert await s.quarantine(d, new_id()) is None
    await put(s, b"corrupt, say")  # a verified upload publishes anew
    assert await read_all(s, d) == b"corrupt, say"


async def test_concurrent_uploads_do_not_mix(h: Harness) -> None:
    s = h.store
    payloads = [bytes([i]) * (50_000 + i) for i in range(8)]

    async def one(data: bytes) -> Digest:
        uid = new_id()
        await s.upload_create(uid)
        size = 0
        for i in range(0, len(data), 7000):
            size = await s.upload_append(uid, size, chunks(data[i : i + 7000]))
        d = Digest.of(data)
        await s.upload_verify(uid, d)
        await s.upload_publish(uid, d)
        return d

    digests = await asyncio.gather(*(one(p) for p in payloads))
    for d, p in zip(digests, payloads, strict=True):
        assert await read_all(s, d) == p


# -- publishing a file verified elsewhere (the mirror's fetches) ----------------------------
def staged_file(h: Harness, data: bytes) -> Path:
    path = h.location.parent / f"staged-{new_id()}"
    path.write_bytes(data)
    return path


async def test_publish_verified_makes_a_file_a_blob(h: Harness) -> None:
    data = b"fetched from upstream" * 1000
    d = Digest.of(data)
    staged = staged_file(h, data)
    await h.store.publish_verified(staged, d)
    assert not staged.exists(), "the published file is consumed"
    assert await h.store.stat(d) == len(data)
    assert await read_all(h.reopen(), d) == data
    assert list((await listed(h.store)).keys()) == [d]


async def test_publish_verified_of_a_large_file(h: Harness) -> None:
    data = os.urandom(11 << 20)  # more than one S3 part
    d = Digest.of(data)
    staged = staged_file(h, data)
    await h.store.publish_verified(staged, d)
    assert not staged.exists()
    assert await read_all(h.reopen(), d) == data


async def test_publish_verified_keeps_an_existing_copy(h: Harness) -> None:
    data = b"the same layer, pushed and fetched"
    d = await put(h.store, data)
    staged = staged_file(h, data)
    await h.store.publish_verified(staged, d)
    assert not staged.exists()
    assert await read_all(h.store, d) == data
    assert list((await listed(h.store)).keys()) == [d]


class FsyncRecorder:
    """Which inodes were fsynced, in order (wraps os.fsync)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inodes: list[int] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            self.inodes.append(os.fstat(fd).st_ino)
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("how", ["push", "publish_verified"])
async def test_filesystem_publish_fsyncs_file_and_directories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Durable once published: the bytes, the rename (the blob's directory) and every
    directory the publish created (their parents), whichever way the blob arrived."""
    store = FilesystemBlobStore(tmp_path / "store")
    data = os.urandom(4096)
    d = Digest.of(data)
    fsyncs = FsyncRecorder(monkeypatch)
    if how == "push":
        await put(store, data)
    else:
        staged = tmp_path / "staged"
        staged.write_bytes(data)
        await store.publish_verified(staged, d)
    blob = store.local_path(d)
    assert blob is not None
    for path in (blob, blob.parent, blob.parent.parent, blob.parent.parent.parent):
        assert path.stat().st_ino in fsyncs.inodes, f"{path} not fsynced"
    assert fsyncs.inodes[-1] == blob.parent.stat().st_ino, "the rename is made durable last"
