"""Fetch coordination through files: lock_fetch (one holder; deleting a lock file never
splits the lock) and a waiter's liveness check around the publish."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

import pytest

from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.fetch import BlobFetches, FetchAborted
from stablemirror.oci.digest import Digest
from stablemirror.store.fetch_files import FetchFiles, lock_fetch
from stablemirror.store.filesystem import FilesystemBlobStore


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "k.lock"
    first = lock_fetch(lock)
    assert first is not None
    assert lock_fetch(lock) is None  # another open file description: flock says no
    os.close(first)
    again = lock_fetch(lock)
    assert again is not None
    os.close(again)


def test_a_lock_on_a_deleted_file_does_not_count(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A opens the file, the holder deletes it and lets go, A's flock then succeeds on the
    orphaned inode: lock_fetch must refuse it, or A and a newcomer C would both lead."""
    lock = tmp_path / "k.lock"
    holder = lock_fetch(lock)
    assert holder is not None
    orphan = os.open(lock, os.O_RDWR)  # A's open, just before the deletion
    lock.unlink()
    os.close(holder)

    real_open = os.open
    with monkeypatch.context() as m:  # A's lock_fetch continues with the orphaned inode
        m.setattr(os, "open", lambda *_a, **_k: os.dup(orphan))
        assert lock_fetch(lock) is None  # the path is gone
        os.close(real_open(lock, os.O_CREAT | os.O_RDWR))  # C creates it again ...
        assert lock_fetch(lock) is None  # ... and the path names another inode now
    newcomer = lock_fetch(lock)
    assert newcomer is not None and lock_fetch(lock) is None
    os.close(newcomer)
    os.close(orphan)


def test_gc_drops_a_finished_fetchs_files_only_when_idle(tmp_path: Path) -> None:
    lock = tmp_path / "sha256-ab.lock"
    for suffix in (".part", ".size", ".error"):
        lock.with_suffix(suffix).write_text("x")
    held = lock_fetch(lock)
    assert held is not None
    old = time.time() - 3600
    for p in tmp_path.iterdir():
        os.utime(p, (old, old))
    files = FetchFiles(tmp_path)
    assert files.sweep(time.time(), dry_run=False) == 0  # a leader holds it: nothing moves
    assert lock.with_suffix(".part").exists()
    os.close(held)
    assert files.sweep(time.time(), dry_run=True) == 1
    assert lock.with_suffix(".part").exists()
    assert files.sweep(time.time(), dry_run=False) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


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
