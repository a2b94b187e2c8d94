"""The files of blobs being fetched (store/fetch_files.py): lock_fetch (one holder; deleting
a lock file never splits the lock) and gc's sweep of what an abandoned fetch left."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stablemirror.oci.digest import Digest
from stablemirror.store.fetch_files import FetchFiles, lock_fetch


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


def test_what_the_small_files_say(tmp_path: Path) -> None:
    files, digest = FetchFiles(tmp_path), Digest("sha256", "cd" * 32)
    assert files.size(digest) is None and files.verified_inode(digest) is None
    files.set_size(digest, 42)
    files.set_verified_inode(digest, 7)
    assert (files.size(digest), files.verified_inode(digest)) == (42, 7)
    before = time.time() - 1
    files.set_error(digest, "NoUpstreamAvailable", 404)
    assert files.error(digest, before) == ("NoUpstreamAvailable", 404)
    assert files.error(digest, time.time() + 1) is None  # older than the caller cares about
    files.drop(digest, "size", "verified", "error")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
