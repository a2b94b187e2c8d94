"""The hot copies on disk, and who is using them.

    <hot>/blobs/<alg>/<hex[:2]>/<hex>   verified copies (renamed in whole, never partial)
    <hot>/promoting/                    promotions in flight (store/hot_promote.py)
    <hot>/tier.db                       counters and scores (store/hot_index.py)
    <hot>/evict.lock                    one evictor at a time across the workers

"In use" is a shared flock(2) on the hot copy. A reader takes one before it is handed the
path (`HotHolds.hold`) and keeps it `HOLD_SECONDS` after its last use, so the path cannot
vanish between `local_path` and the sendfile that opens it, and a blob read again and again
stays locked without a syscall per read; api/sendfile.py and streamed reads also hold one on
their own descriptor while they send. The evictor takes LOCK_EX|LOCK_NB and skips what it
cannot lock. Owner: the process holding the descriptor (the kernel drops it when that
process dies); expiry: HOLD_SECONDS after the last use, or when the transfer ends.
The holds' descriptors are used on the event loop only (flock, fstat), never in a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import time
from pathlib import Path

from stablemirror.oci.digest import Digest

HOLD_SECONDS = 30.0
MAX_HOLDS = 1024  # descriptors per process (at most 1/8 of RLIMIT_NOFILE); LRU go first


class HotFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_root = root / "blobs"
        self.promoting = root / "promoting"
        self.db = root / "tier.db"
        self.evict_lock = root / "evict.lock"
        self.blob_root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.blob_root / digest.algorithm / digest.hex[:2] / digest.hex

    def on_disk(self) -> dict[str, int]:
        """digest -> size of every hot copy."""
        found: dict[str, int] = {}
        for alg in self.blob_root.iterdir():
            for prefix in alg.iterdir():
                for entry in os.scandir(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found[f"{alg.name}:{entry.name}"] = entry.stat().st_size
        return found

    def evict(self, digest: Digest) -> bool | None:
        """Remove the hot copy unless someone holds it: True removed, False in use, None
        already gone. The unlink happens while we hold LOCK_EX, so no reader that locked
        it (and checked the path still names its inode) is ever left with a vanished path."""
        path = self.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            if _same_file(path, fd):
                path.unlink()
                return True
            return None
        finally:
            os.close(fd)


class HotHolds:
    """This process's shared locks on hot copies, each kept HOLD_SECONDS after its last use."""

    def __init__(self, files: HotFiles, hold_seconds: float = HOLD_SECONDS) -> None:
        self.files = files
        self.hold_seconds = hold_seconds
        self._held: dict[str, tuple[int, float, Path]] = {}  # digest -> (fd, last use, path)
        self._pid = os.getpid()
        self._last_sweep = 0.0
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_holds = MAX_HOLDS if soft == resource.RLIM_INFINITY else max(
            16, min(MAX_HOLDS, soft // 8))

    def hold(self, digest: Digest) -> tuple[int, Path] | None:
        """(size, path) of the hot copy, now held; None if there is none (or it is being
        evicted this very moment). A held copy costs a dict lookup and two stats."""
        self._forked()
        now = time.monotonic()
        key = str(digest)
        held = self._held.get(key)
        if held is not None:
            fd, _last, path = held
            st = os.fstat(fd)
            try:
                same = os.stat(path).st_ino == st.st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._held[key] = (fd, now, path)
                self._sweep(now)
                return st.st_size, path
            self.release(digest)  # deleted (GC, quarantine) by another process
        path = self.files.path(digest)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            if not _same_file(path, fd):  # evicted between our open and our lock
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        self._held[key] = (fd, now, path)
        self._sweep(now)
        return os.fstat(fd).st_size, path

    def release(self, digest: Digest) -> None:
        held = self._held.pop(str(digest), None)
        if held is not None:
            os.close(held[0])

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 1.0 and len(self._held) <= self.max_holds:
            return
        self._last_sweep = now
        by_age = sorted(self._held.items(), key=lambda item: item[1][1])
        excess = len(by_age) - self.max_holds
        for i, (key, (fd, last, _path)) in enumerate(by_age):
            if i < excess or now - last > self.hold_seconds:
                del self._held[key]
                os.close(fd)

    def _forked(self) -> None:
        """A forked worker inherits the parent's descriptors: they are not its holds."""
        if self._pid != os.getpid():
            self._held = {}
            self._pid = os.getpid()

    def close(self) -> None:
        for fd, _last, _path in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held = {}


def _same_file(path: Path, fd: int) -> bool:
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
