"""Holds on hot copies (store/hot_files.py): a held copy cannot be evicted, a hold expires
after its idle time or when too many are held, a copy deleted elsewhere is not handed out."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stablemirror.oci.digest import Digest
from stablemirror.store.hot_files import HotFiles, HotHolds


def hot_copy(files: HotFiles, data: bytes) -> Digest:
    d = Digest.of(data)
    path = files.path(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return d


def test_a_held_copy_is_not_evicted_until_its_hold_expires(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    files = HotFiles(tmp_path)
    holds = HotHolds(files, hold_seconds=5.0)
    d = hot_copy(files, b"held")
    assert holds.hold(d) == (4, files.path(d))
    assert files.evict(d) is False and files.path(d).exists()
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 6.0)  # idle past its expiry
    other = hot_copy(files, b"other")
    assert holds.hold(other) is not None  # any use sweeps expired holds
    assert files.evict(d) is True and not files.path(d).exists()
    assert holds.hold(d) is None
    assert files.evict(d) is None


def test_too_many_holds_release_the_least_recently_used(tmp_path: Path) -> None:
    files = HotFiles(tmp_path)
    holds = HotHolds(files)
    holds.max_holds = 2
    first, second, third = (hot_copy(files, bytes([i])) for i in range(3))
    for d in (first, second, third):
        assert holds.hold(d) is not None
    assert files.evict(first) is True  # its hold went when the third came
    assert files.evict(second) is False and files.evict(third) is False
    holds.close()


def test_a_copy_deleted_by_another_process_is_not_handed_out(tmp_path: Path) -> None:
    files = HotFiles(tmp_path)
    holds = HotHolds(files)
    d = hot_copy(files, b"gone soon")
    assert holds.hold(d) is not None
    os.unlink(files.path(d))  # `stablemirror gc` through its own tier
    assert holds.hold(d) is None
    hot_copy(files, b"gone soon")  # published and promoted again: a new inode
    assert holds.hold(d) is not None
    holds.close()
