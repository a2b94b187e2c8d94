"""Promotion: one cold read per blob, however many readers on however many workers.

The files of a promotion are the fetch files (store/fetch_files.py) under
`<hot>/promoting/`: `.lock` (flock'd by the one leader, any process), `.part` (the bytes
so far), `.verified` (the inode of a `.part` whose digest matched), `.error` (why the last
leader gave up). The leader is a task of the process that won the lock; it streams the
blob from the cold tier into `.part`, hashing as it goes, fsyncs it, and only then renames
it to the hot copy. Every reader, in any process, follows the growing `.part` through its
own descriptor and holds back its last byte until the inode it read is vouched for
(`.verified` or the hot copy itself): a wrong or short cold read ends the response with
`PromotionAborted` (the HTTP layer drops the connection), never a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from stablemirror.files.create_once import fsync_dir
from stablemirror.files.fd_jobs import fsync_job, pread_job, run_on_dups
from stablemirror.oci.digest import Digest, Hasher
from stablemirror.oci.errors import BlobUnknown
from stablemirror.store.fetch_files import FetchFiles, lock_fetch
from stablemirror.store.hot_index import HotIndex
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.hot")

CHUNK = 1 << 20
UNKNOWN = "unknown"  # the cold tier has no such blob
TOO_BIG = "too_big"  # the blob would not fit under the low watermark
MARKER_SECONDS = 600.0  # `.verified`/`.error` of a finished promotion outlive its readers


class PromotionAborted(Exception):
    """The bytes being followed cannot be vouched for: drop the client connection."""


class NotPromoted(Exception):
    """No promotion could be followed (too big, leader gone before any byte): the caller
    reads the cold tier itself."""


class Promotions:
    def __init__(self, cold: BlobStore, directory: Path, hot_path: Callable[[Digest], Path],
                 index: HotIndex, max_size: int,
                 on_promoted: Callable[[Digest, int], None],
                 on_cold_read: Callable[[int, int], None],
                 poll_seconds: float = 0.005, wait_seconds: float = 300.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.files = FetchFiles(directory)
        self.cold = cold
        self.hot_path = hot_path
        self.index = index
        self.max_size = max_size
        self.on_promoted = on_promoted
        self.on_cold_read = on_cold_read  # (reads, bytes), for the metrics
        self.poll = poll_seconds
        self.wait_seconds = wait_seconds
        self._leading: dict[str, asyncio.Task[None]] = {}

    def sweep_leftovers(self) -> int:
        """Drop what crashed leaders left (`.part` and friends no leader holds), and the
        markers of promotions that ended a while ago."""
        removed = self.files.sweep(time.time() + 1, dry_run=False)
        cutoff = time.time() - MARKER_SECONDS
        for marker in [*self.files.dir.glob("*.verified"), *self.files.dir.glob("*.error")]:
            with contextlib.suppress(FileNotFoundError):
                if (not marker.with_suffix(".lock").exists()
                        and marker.stat().st_mtime < cutoff):
                    marker.unlink()
        return removed

    # -- leading ----------------------------------------------------------------------------
    def try_lead(self, digest: Digest) -> bool:
        key = self.files.key(digest)
        if key in self._leading:
            return True
        fd = lock_fetch(self.files.path(digest, "lock"))
        if fd is None:
            return False
        # A dead leader's files go now, before any reader can open its `.part` again.
        self.files.drop(digest, "part", "error", "verified")
        task = asyncio.get_running_loop().create_task(self._lead(digest, fd))
        self._leading[key] = task
        task.add_done_callback(lambda _t: self._leading.pop(key, None))
        return True

    async def _lead(self, digest: Digest, lock_fd: int) -> None:
        started = time.time()
        part = self.files.path(digest, "part")
        try:
            if _inode(self.hot_path(digest)) is not None:
                return  # a leader that just finished (we took its lock as it let go)
            size = await self.cold.stat(digest)
            if size is None:
                self.files.set_error(digest, UNKNOWN, None)
                return
            if size > self.max_size:
                self.index.mark_too_big(str(digest))
                self.files.set_error(digest, TOO_BIG, None)
                return
            f = open(part, "wb")  # noqa: ASYNC230, SIM115 - closed below
            try:
                ok = await self._copy(digest, f, size)
            finally:
                f.close()
            if not ok:
                self.files.drop(digest, "part")
                return
            await self._publish(digest, part, size, started)
        except asyncio.CancelledError:
            self.files.set_error(digest, "cancelled", None)
            raise
        except Exception as e:
            log.exception("promotion of %s failed", digest)
            self.files.set_error(digest, type(e).__name__, None)
            self.files.drop(digest, "part")
        finally:
            if not part.exists():  # done: drop the lock file while holding it
                with contextlib.suppress(FileNotFoundError):
                    self.files.path(digest, "lock").unlink()
            os.close(lock_fd)

    async def _copy(self, digest: Digest, f: BinaryIO, size: int) -> bool:
        hasher = digest.hasher()
        n = 0
        self.on_cold_read(1, 0)
        async for chunk in self.cold.read(digest):
            await asyncio.to_thread(_write_and_hash, f, chunk, hasher)
            n += len(chunk)
            self.on_cold_read(0, len(chunk))
        await asyncio.to_thread(f.flush)
        await run_on_dups(None, (f.fileno(),), fsync_job)
        if n != size or hasher.hexdigest() != digest.hex:
            reason = "incomplete" if n != size else "digest_mismatch"
            log.error("promotion of %s rejected: %s (cold tier bytes)", digest, reason)
            self.files.set_error(digest, reason, None)
            return False
        self.files.set_verified_inode(digest, os.fstat(f.fileno()).st_ino)
        return True

    async def _publish(self, digest: Digest, part: Path, size: int, started: float) -> None:
        dest = self.hot_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Deleted through the tier meanwhile: no hot copy, but `.verified` stays, so the
        # readers following it finish (their bytes were verified); the sweep drops it.
        if self.index.deleted_since(str(digest), started):
            self.files.drop(digest, "part")
            return
        os.rename(part, dest)
        await asyncio.to_thread(fsync_dir, dest.parent)
        # Row after rename: a crash between leaves a file reconcile() adopts. A delete
        # through the tier between the rename and here is seen by admit(); one after it
        # unlinks the file we just renamed.
        if not self.index.admit(str(digest), size, started, time.time()):
            dest.unlink(missing_ok=True)
            return
        self.on_promoted(digest, size)
        self.files.drop(digest, "verified")

    # -- following ------------------------------------------------------------------------------
    async def follow(self, digest: Digest, offset: int, length: int | None
                     ) -> AsyncIterator[bytes]:
        """The blob's bytes [offset, offset+length) as the promotion writes them. Raises
        NotPromoted before the first byte if there is nothing to follow, BlobUnknown if
        the cold tier has no such blob, PromotionAborted mid-stream."""
        started = time.time()
        fd, verified = await self._open(digest, started)
        try:
            inode = os.fstat(fd).st_ino
            pos = offset
            deadline = time.monotonic() + self.wait_seconds
            while True:
                avail = os.fstat(fd).st_size
                stop = avail if length is None else min(offset + length, avail)
                if not verified and (length is None or stop == offset + length):
                    stop -= 1  # the last byte waits for the digest
                if stop > pos:
                    data = await run_on_dups(None, (fd,), pread_job(min(CHUNK, stop - pos),
                                                                    pos))
                    if not data:
                        raise PromotionAborted(f"{digest}: file shrank while following")
                    pos += len(data)
                    deadline = time.monotonic() + self.wait_seconds
                    yield data
                    continue
                if verified:
                    return
                if inode in (self.files.verified_inode(digest), _inode(self.hot_path(digest))):
                    verified = True
                    continue
                self._check_alive(digest, inode, started)
                if time.monotonic() > deadline:
                    raise PromotionAborted(f"{digest}: promotion stalled")
                await asyncio.sleep(self.poll)
        finally:
            os.close(fd)

    async def _open(self, digest: Digest, started: float) -> tuple[int, bool]:
        """A descriptor on the `.part` (unverified) or the finished hot copy (verified)."""
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            led = self._led_somewhere(digest)
            if led:  # a `.part` nobody leads is a dead leader's: never followed
                with contextlib.suppress(FileNotFoundError):
                    return os.open(self.files.path(digest, "part"), os.O_RDONLY), False
            with contextlib.suppress(FileNotFoundError):
                return os.open(self.hot_path(digest), os.O_RDONLY), True
            failure = self.files.error(digest, started)
            if failure is not None:
                if failure[0] == UNKNOWN:
                    raise BlobUnknown(digest=str(digest))
                raise NotPromoted(failure[0])
            if not led:
                self.try_lead(digest)  # or another reader just did: either way, wait
            await asyncio.sleep(self.poll)
        raise NotPromoted("timed out waiting for the promotion to start")

    def _led_somewhere(self, digest: Digest) -> bool:
        """Whether a leader (this process or another) holds the promotion's lock; never
        creates the lock file."""
        if self.files.key(digest) in self._leading:
            return True
        try:
            fd = os.open(self.files.path(digest, "lock"), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        finally:
            os.close(fd)  # releases the probe's lock, if it got it
        return False

    def _check_alive(self, digest: Digest, inode: int, since: float) -> None:
        """Abort if what we follow can no longer become the hot copy."""
        failure = self.files.error(digest, since)
        if failure is not None:
            raise PromotionAborted(f"{digest}: promotion failed: {failure[0]}")
        # Each test reads the state that moves first (part, then lock), then the one that
        # follows (hot copy, `.verified`), so a leader finishing in between is no failure.
        restarted = _inode(self.files.path(digest, "part")) != inode
        abandoned = not restarted and not self._led_somewhere(digest)
        if (restarted or abandoned) and inode not in (self.files.verified_inode(digest),
                                                      _inode(self.hot_path(digest))):
            raise PromotionAborted(f"{digest}: promotion "
                                   f"{'restarted under us' if restarted else 'abandoned'}")

    async def aclose(self) -> None:
        for task in list(self._leading.values()):
            task.cancel()
        await asyncio.gather(*self._leading.values(), return_exceptions=True)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _write_and_hash(f: BinaryIO, chunk: bytes, hasher: Hasher) -> None:
    f.write(chunk)
    hasher.update(chunk)
