"""Blob fetches (mirror/fetch.py): a mirrored blob is published through the store's one
durable path (publish_verified), its file, rename and directories fsynced; a waiter's
liveness check around the publish."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.fetch import BlobFetches, FetchAborted
from stablemirror.oci.digest import Digest
from stablemirror.store.filesystem import FilesystemBlobStore


class OneShotUpstream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def max_attempts(self) -> int:
        return 1

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield self.data[offset:]
        return len(self.data), chunks()


class LinkRecordingIndex:
    def __init__(self) -> None:
        self.linked: list[tuple[str, str, int]] = []

    async def link_blob(self, repository: str, digest: Digest, size: int) -> None:
        self.linked.append((repository, str(digest), size))


async def test_a_fetched_blob_is_published_durably_through_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemBlobStore(tmp_path / "data")
    published: list[tuple[Path, Digest]] = []
    real_publish = store.publish_verified

    async def publish_verified(path: Path, digest: Digest) -> None:
        published.append((path, digest))
        await real_publish(path, digest)

    monkeypatch.setattr(store, "publish_verified", publish_verified)
    fsynced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    index = LinkRecordingIndex()
    fetches = BlobFetches(tmp_path / "data" / "fetch", store, cast(RegistryIndex, index))
    data = os.urandom(300_000)
    digest = Digest.of(data)
    source = OneShotUpstream(data)

    assert await fetches.ensure(digest, "lib/app", source) == len(data)
    received = b"".join([c async for c in fetches.stream(digest, 0, len(data), "lib/app",
                                                         source)])
    assert received == data
    await asyncio.wait_for(asyncio.gather(*fetches._tasks.values()), 10)

    blob = store.local_path(digest)
    assert blob is not None and blob.read_bytes() == data
    assert published == [(fetches.files.path(digest, "part"), digest)]
    assert index.linked == [("lib/app", str(digest), len(data))]
    for path in (blob, blob.parent, blob.parent.parent):
        assert path.stat().st_ino in fsynced, f"{path} not fsynced"
    assert not fetches.files.path(digest, "part").exists()
    assert not fetches.files.path(digest, "lock").exists()


def _waiter_on_a_part(tmp_path: Path, data: bytes) -> tuple[BlobFetches, Digest, int, Path]:
    """A fetch whose .part holds `data`: (fetches, digest, the inode a waiter read, the
    path the blob is published at, its directory created)."""
    store = FilesystemBlobStore(tmp_path / "data")
    index = cast(RegistryIndex, None)  # the checks below never touch the index
    fetches, digest = BlobFetches(tmp_path / "fetch", store, index), Digest("sha256", "ab" * 32)
    part = fetches.files.path(digest, "part")
    part.write_bytes(data)
    dest = store.local_path(digest)
    assert dest is not None
    dest.parent.mkdir(parents=True)
    return fetches, digest, part.stat().st_ino, dest


def test_a_waiter_whose_part_was_just_published_is_not_aborted(tmp_path: Path) -> None:
    """The leader may publish between a waiter's "verified yet?" look and its liveness
    check: the published inode is the one the waiter read, so it carries on."""
    fetches, digest, inode, dest = _waiter_on_a_part(tmp_path, b"verified bytes")
    fetches.files.path(digest, "part").rename(dest)
    fetches._check_alive(digest, inode, time.time())  # no FetchAborted


def test_a_waiter_whose_part_was_replaced_is_aborted(tmp_path: Path) -> None:
    fetches, digest, inode, dest = _waiter_on_a_part(tmp_path, b"bad bytes")
    dest.write_bytes(b"other bytes")  # published from another file
    with pytest.raises(FetchAborted):
        fetches._check_alive(digest, inode, time.time())
