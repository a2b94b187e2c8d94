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
import json
import os
import time
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

    # -- what the small files say ----------------------------------------------------------
    def size(self, digest: Digest) -> int | None:
        return _read_int(self.path(digest, "size"))

    def set_size(self, digest: Digest, size: int) -> None:
        _write_atomic(self.path(digest, "size"), str(size))

    def verified_inode(self, digest: Digest) -> int | None:
        return _read_int(self.path(digest, "verified"))

    def set_verified_inode(self, digest: Digest, inode: int) -> None:
        _write_atomic(self.path(digest, "verified"), str(inode))

    def error(self, digest: Digest, since: float) -> tuple[str, int | None] | None:
        """(reason, upstream status) of a failure recorded at or after `since`."""
        try:
            doc = json.loads(self.path(digest, "error").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if doc.get("at", 0) < since:
            return None
        return str(doc.get("reason")), doc.get("status")

    def set_error(self, digest: Digest, reason: str, status: int | None) -> None:
        self.path(digest, "error").write_text(
            json.dumps({"reason": reason, "status": status, "at": time.time()}))

    def drop(self, digest: Digest, *suffixes: Suffix) -> None:
        for suffix in suffixes:
            self.path(digest, suffix).unlink(missing_ok=True)

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


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
