"""The files of a blob being fetched, spelled in one place: `<data>/fetch/<alg>-<hex>.<suffix>`.

    .lock      flock(2)ed by the one leader that talks to upstream (any process); deleted,
               always while locked, once the blob is published or the fetch is abandoned
    .part      the bytes so far, appended in order
    .size      the blob's total size, once an upstream said it
    .error     why the last leader gave up (so waiters fail instead of retrying forever)
    .verified  the inode number of a `.part` whose digest matched (before its publish)
The mirror's fetches (mirror/fetch.py) write them; garbage collection (registry/gc.py)
sweeps what an abandoned fetch left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Literal

from stablemirror.oci.digest import Digest

Suffix = Literal["lock", "part", "size", "error", "verified"]
SWEEP_ORDER: tuple[Suffix, ...] = ("part", "size", "error", "verified", "lock")  # lock last


class FetchFiles:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @staticmethod
    def key(digest: Digest) -> str:
        return f"{digest.algorithm}-{digest.hex}"

    def path(self, digest: Digest, suffix: Suffix) -> Path:
        return self.dir / f"{self.key(digest)}.{suffix}"

    def sweep(self, cutoff: float, dry_run: bool) -> int:
        """Drop the files of fetches untouched since `cutoff` that no leader holds; return
        how many partial transfers went (or, on a dry run, would go)."""
        if not self.dir.is_dir():
            return 0
        removed = 0
        for lock in self.dir.glob("*.lock"):
            part = lock.with_suffix(".part")
            try:
                newest = max(p.stat().st_mtime for p in (lock, part) if p.exists())
            except (FileNotFoundError, ValueError):
                continue
            if newest >= cutoff:
                continue
            partial = part.exists()
            if dry_run:
                removed += partial
            elif _drop_if_idle(lock) and partial:
                removed += 1
        return removed


def lock_fetch(path: Path) -> int | None:
    """flock `path` without waiting; the fd, or None if someone else holds it.

    Lock files are deleted once a fetch is done (by the leader, or by gc), always while
    locked. Whoever opened the file just before the deletion may then lock an orphaned
    inode, so a lock only counts if the path still names the inode we locked."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _drop_if_idle(lock: Path) -> bool:
    """Remove a fetch's files, lock file last, but only while holding its lock."""
    fd = lock_fetch(lock)
    if fd is None:
        return False  # a leader is working on it right now
    try:
        for suffix in SWEEP_ORDER:
            with contextlib.suppress(FileNotFoundError):
                lock.with_suffix(f".{suffix}").unlink()
        return True
    finally:
        os.close(fd)
