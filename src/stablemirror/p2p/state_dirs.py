"""The edge's per-(blob, cluster) state directories (handout.py's claims), locked while in
use and removed once idle, so a long-running edge does not keep one for every blob it ever
handed out.

A directory's lock is the `flock` of its `lock` file. Removal takes that lock, checks that
nothing in the directory was touched for the idle time, and unlinks the files and the
directory while holding it. Whoever waited for the lock meanwhile holds a file that is no
longer the directory's lock, so it sees that (the path names another file, or none) and
locks again, on a new directory. So a claim lands either before a removal, which then
finds the directory in use and keeps it, or after it, in a new directory: never in one
being removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOCK = "lock"
LOCK_ATTEMPTS = 8  # a directory removed this many times in a row while we waited: give up


@contextlib.contextmanager
def locked(where: Path) -> Iterator[None]:
    """Hold the lock of the state directory `where` (created if missing)."""
    fd = _lock(where)
    try:
        yield
    finally:
        os.close(fd)  # releases the flock


def _lock(where: Path) -> int:
    for _ in range(LOCK_ATTEMPTS):
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd = os.open(where / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except (FileNotFoundError, FileExistsError):
            # removed between the mkdir and the open; or (FileExistsError) a parent made
            # by another and removed again before mkdir's own check that it is there
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _is_file_at(fd, where / LOCK):
            return fd
        os.close(fd)  # removed while we waited: the directory's lock is a new file now
    raise OSError(errno.EAGAIN, f"{where}: removed {LOCK_ATTEMPTS} times while locking")


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def remove_idle(root: Path, idle_seconds: float, now: float | None = None) -> int:
    """Remove every `root/<blob>/<cluster>` in which nothing was touched for
    `idle_seconds`; returns how many were removed."""
    cutoff = (time.time() if now is None else now) - idle_seconds
    removed = 0
    for blob_dir in subdirs(root):
        for where in subdirs(blob_dir):
            removed += _remove_if_idle(where, cutoff)
        with contextlib.suppress(OSError):  # only an empty one goes
            blob_dir.rmdir()
    return removed


def subdirs(path: Path) -> list[Path]:
    """The directories in `path`; none if it is gone (removed meanwhile)."""
    return [p for p in entries(path) if p.is_dir()]


def entries(path: Path) -> list[Path]:
    """What `path` holds; nothing if it is gone (removed meanwhile)."""
    try:
        return list(path.iterdir())
    except FileNotFoundError:
        return []


def _remove_if_idle(where: Path, cutoff: float) -> bool:
    try:
        fd = os.open(where / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # being created (its creator makes the lock first) or removed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _is_file_at(fd, where / LOCK):
            return False  # removed by another worker meanwhile
        held = list(where.iterdir())
        if any(_mtime(e) >= cutoff for e in held):
            return False
        for entry in held:
            if entry.name != LOCK:
                entry.unlink(missing_ok=True)
        (where / LOCK).unlink()
        with contextlib.suppress(OSError):  # a new lock made since the unlink: it stays
            where.rmdir()
        return True
    finally:
        os.close(fd)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
