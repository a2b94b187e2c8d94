"""One upstream fetch per blob, streamed to every waiting client, across worker processes.

A digest being fetched has its files in `<data>/fetch/` (what each holds: store/fetch_files.py).
Waiters tail `.part` through their own descriptor. The last byte of every response is held
back until the inode the waiter read is vouched for: named in `.verified`, or published in
the store (so the bytes it sent are the bytes that were verified); otherwise the waiter
raises `FetchAborted` and the HTTP layer drops the connection: a client never sees a clean
end with wrong bytes. The leader receives, writes and hashes in parallel (part_writer.py).
A leader that dies (crash, upstream gone) leaves `.part` behind; the next waiter or request
takes the lock and resumes with a Range request from the bytes already on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from stablemirror.files.fd_jobs import pread_job, run_on_dups
from stablemirror.index.protocol import RegistryIndex
from stablemirror.mirror.events import BlobMissed, MirrorEvent, MirrorListener
from stablemirror.mirror.part_writer import PartWriter
from stablemirror.mirror.plain_http import SocketBody
from stablemirror.mirror.upstream import NoUpstreamAvailable, UpstreamAnswer, UpstreamFailure
from stablemirror.oci.digest import Digest, Hasher, new_hasher
from stablemirror.store.fetch_files import FetchFiles, lock_fetch
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.fetch")

CHUNK = 1 << 20
WRITE_BATCH = 1 << 20


class FetchAborted(Exception):
    """The bytes being streamed cannot be vouched for: drop the client connection."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(digest, reason)
        self.digest = digest
        self.reason = reason


class FetchFailed(Exception):
    """No upstream could provide the blob (before any byte was sent)."""

    def __init__(self, digest: str, reason: str, status: int | None = None) -> None:
        super().__init__(digest, reason)
        self.digest = digest
        self.reason = reason
        self.status = status


class BlobUpstream(Protocol):
    """Where a leader gets bytes: `open(offset)` -> (total size, chunks from `offset`).

    Chunks raise UpstreamFailure when the transfer breaks (the leader resumes from the
    bytes it has); `open` raises NoUpstreamAvailable / UpstreamAnswer when nobody can serve.
    """

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]: ...

    @property
    def max_attempts(self) -> int: ...


class BlobFetches:
    def __init__(self, directory: Path, store: BlobStore, index: RegistryIndex,
                 poll_seconds: float = 0.01, wait_seconds: float = 300.0) -> None:
        self.files = FetchFiles(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.index = index
        self.poll = poll_seconds
        self.wait_seconds = wait_seconds
        self._events: dict[str, asyncio.Event] = {}
        self._leading: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._publishing: set[str] = set()
        self.listeners: list[MirrorListener] = []
        # called by the leader once a fetched blob is published, with the source it used
        self.published: list[Callable[[Digest, BlobUpstream], None]] = []

    def _emit(self, event: MirrorEvent) -> None:
        for listener in self.listeners:
            listener(event)

    # -- waiting -----------------------------------------------------------------------------
    def _notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def _wait(self, key: str) -> None:
        event = self._events.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.poll)

    # -- leadership ------------------------------------------------------------------------------
    def _try_lead(self, digest: Digest, repository: str, source: BlobUpstream) -> bool:
        key = self.files.key(digest)
        if key in self._leading:
            return False
        fd = lock_fetch(self.files.path(digest, "lock"))
        if fd is None:
            return False
        self._leading.add(key)
        task = asyncio.get_running_loop().create_task(
            self._lead(digest, repository, source, fd))
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        return True

    async def ensure(self, digest: Digest, repository: str, source: BlobUpstream) -> int:
        """Start (or join) the fetch of `digest`; return its total size once known."""
        started = time.time()
        coalesced = not self._try_lead(digest, repository, source)
        self._emit(BlobMissed(coalesced))
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            stored = await self.store.stat(digest)
            if stored is not None:
                return stored
            size = self.files.size(digest)
            if size is not None:
                return size
            key = self.files.key(digest)
            if key not in self._leading:
                failure = self.files.error(digest, started)
                if failure is not None:
                    raise FetchFailed(str(digest), failure[0], failure[1])
                self._try_lead(digest, repository, source)
            await self._wait(key)
        raise FetchFailed(str(digest), "timed out waiting for upstream")

    async def _lead(self, digest: Digest, repository: str, source: BlobUpstream,
                    lock_fd: int) -> None:
        key = self.files.key(digest)
        part = self.files.path(digest, "part")
        try:
            if await self.store.stat(digest) is not None:
                return
            # a marker left by a crash could name an inode a new .part reuses
            self.files.drop(digest, "error", "verified")
            await self._download(digest, repository, source, part, lock_fd)
        except (NoUpstreamAvailable, UpstreamAnswer) as e:
            status = e.status if isinstance(e, UpstreamAnswer) else None
            self._fail(digest, type(e).__name__, status)
        except Exception as e:
            log.exception("fetch of %s failed", digest)
            self._fail(digest, type(e).__name__, None)
        finally:
            self._leading.discard(key)
            self._publishing.discard(key)
            if not part.exists() and await self._is_published(digest):
                # done: drop the lock file while holding it (lock_fetch rechecks the path)
                with contextlib.suppress(FileNotFoundError):
                    self.files.path(digest, "lock").unlink()
            os.close(lock_fd)  # releases the flock
            self._notify(key)

    def _discard(self, digest: Digest, reason: str) -> None:
        """Wrong or incomplete bytes are never kept: the next fetch starts from zero."""
        self.files.drop(digest, "part", "size")
        self._fail(digest, reason, None)

    def _fail(self, digest: Digest, reason: str, status: int | None) -> None:
        self.files.set_error(digest, reason, status)

    async def _download(self, digest: Digest, repository: str, source: BlobUpstream,
                        part: Path, lock_fd: int) -> None:
        key = self.files.key(digest)
        f = open(part, "ab+")  # noqa: ASYNC230, SIM115 - closed below
        try:
            offset = f.seek(0, os.SEEK_END)
            hasher = new_hasher(digest.algorithm)
            if offset:  # resuming what an earlier leader left
                await asyncio.to_thread(_hash_prefix, part, offset, hasher)
            # A complete .part (its leader was stopped between verifying and publishing)
            # needs no upstream: verify and publish what is on disk.
            known = self.files.size(digest) if offset else None
            total = offset if known == offset else -1
            attempts = 0 if total == offset else source.max_attempts
            writer = PartWriter(f, hasher, lambda: self._notify(key), hold=(lock_fd,))
            try:
                for _attempt in range(attempts):
                    total, chunks = await source.open(offset)
                    self.files.set_size(digest, total)
                    self._notify(key)  # waiters can send headers now
                    offset = await self._receive(chunks, writer, offset, digest)
                    if offset >= total:
                        break
                await writer.close()
            finally:
                writer.stop()
            if offset != total or hasher.hexdigest() != digest.hex:
                reason = "incomplete" if offset != total else "digest_mismatch"
                log.error("fetch of %s rejected: %s", digest, reason)
                self._discard(digest, reason)
                # a source that assembled the blob another way (mirror/delta_source.py)
                # switches to a whole-blob fetch once when those bytes do not verify
                retry = getattr(source, "retry_plain", None)
                if reason == "digest_mismatch" and retry is not None and retry():
                    # the assembled bytes were wrong: waiters on this .part abort (its
                    # inode is gone), a fresh .part is fetched whole under the same lock
                    f.close()
                    self.files.drop(digest, "error")
                    await self._download(digest, repository, source, part, lock_fd)
                return
            # Verified: waiters may send their last byte now; the durable publish (fsync,
            # rename, directory fsync) need not hold up the clients. From here on a
            # shutdown waits for the publish instead of cancelling it (aclose).
            self.files.set_verified_inode(digest, os.fstat(f.fileno()).st_ino)
            self._publishing.add(key)
            self._notify(key)
        finally:
            f.close()
        # Index first, then publish: see registry/gc.py for why this order is safe.
        await self.index.link_blob(repository, digest, total)
        # The store's one publish path, shared with pushes: it fsyncs file and directory.
        await self.store.publish_verified(part, digest)
        # A remote store (S3) leaves no inode behind to recognise the published bytes by:
        # the marker stays, naming the .part waiters still stream from (unlinked, their fd
        # holds it), until the next leader of this digest drops it first thing.
        local = self.store.local_path(digest) is not None
        self.files.drop(digest, "size", *(("verified",) if local else ()))
        for published in self.published:
            published(digest, source)

    async def _receive(self, chunks: AsyncIterator[bytes], writer: PartWriter, offset: int,
                       digest: Digest) -> int:
        """Queue what one upstream response sends; return the offset it reached."""
        if isinstance(chunks, SocketBody):  # read off the socket by the writer's thread
            received, short = await writer.receive(chunks)
            if short is not None:
                chunks.broke(short)
                log.warning("fetch of %s broke at %d: %s; resuming", digest, offset + received,
                            short)
            return offset + received
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    await writer.put(batch)
                    offset += batched
                    batch, batched = [], 0
        except UpstreamFailure as e:
            log.warning("fetch of %s broke at %d: %s; resuming", digest, offset + batched,
                        e.reason)
        if batch:  # what arrived before a break is intact: keep it and resume after it
            await writer.put(batch)
            offset += batched
        return offset

    # -- streaming to a client ---------------------------------------------------------------------
    async def regions(self, digest: Digest, offset: int, length: int, repository: str,
                      source: BlobUpstream) -> AsyncIterator[tuple[int, int, int]]:
        """(fd, offset, count) pieces of [offset, offset+length) as they become sendable.

        The fd is valid until the next iteration, so a caller can sendfile(2) straight
        from the file being fetched. `repository` and `source` let this waiter take over
        if the leader dies. See the module doc for the held-back last byte."""
        key = self.files.key(digest)
        started = time.time()
        fd, verified = self._open_for_reading(digest)
        inode = os.fstat(fd).st_ino
        try:
            pos, end = offset, offset + length
            deadline = time.monotonic() + self.wait_seconds
            while pos < end:
                limit = end - pos if verified else end - pos - 1
                ready = min(limit, os.fstat(fd).st_size - pos)
                if ready > 0:
                    yield fd, pos, ready
                    pos += ready
                    deadline = time.monotonic() + self.wait_seconds
                    continue
                # .verified first: the leader writes it before publishing, removes it after
                if inode in (self.files.verified_inode(digest), self._published_inode(digest)):
                    verified = True
                    continue
                self._check_alive(digest, inode, started)
                if key not in self._leading:
                    self._try_lead(digest, repository, source)
                if time.monotonic() > deadline:
                    raise FetchAborted(str(digest), "stalled")
                await self._wait(key)
        finally:
            os.close(fd)

    async def stream(self, digest: Digest, offset: int, length: int, repository: str,
                     source: BlobUpstream) -> AsyncIterator[bytes]:
        """The same bytes as `regions`, read into memory piece by piece."""
        async for fd, pos, count in self.regions(digest, offset, length, repository, source):
            end = pos + count
            while pos < end:
                data = await run_on_dups(None, (fd,), pread_job(min(CHUNK, end - pos), pos))
                if not data:
                    raise FetchAborted(str(digest), "file shrank while streaming")
                pos += len(data)
                yield data

    def _open_for_reading(self, digest: Digest) -> tuple[int, bool]:
        for _ in range(3):
            try:
                return os.open(self.files.path(digest, "part"), os.O_RDONLY), False
            except FileNotFoundError:
                pass
            dest = self.store.local_path(digest)
            try:
                if dest is not None:
                    return os.open(dest, os.O_RDONLY), True
            except FileNotFoundError:
                pass
        raise FetchAborted(str(digest), "fetch vanished")

    async def _is_published(self, digest: Digest) -> bool:
        dest = self.store.local_path(digest)
        if dest is not None:
            return dest.exists()
        try:
            return await self.store.stat(digest) is not None
        except Exception:  # a store that does not answer: keep the lock file for gc
            return False

    def _published_inode(self, digest: Digest) -> int | None:
        dest = self.store.local_path(digest)
        try:
            return None if dest is None else dest.stat().st_ino
        except FileNotFoundError:
            return None

    def _check_alive(self, digest: Digest, inode: int, since: float) -> None:
        """Abort if what we read can no longer become the published blob."""
        published = self._published_inode(digest)
        if published == inode:
            return  # published since the caller looked: its next round sees it
        if published is not None:
            raise FetchAborted(str(digest), "published bytes differ from streamed bytes")
        try:
            current = self.files.path(digest, "part").stat().st_ino
        except FileNotFoundError:
            current = None
        if current != inode:
            raise FetchAborted(str(digest), "fetch restarted after a failed verification")
        if self.files.key(digest) not in self._leading and self.files.error(digest, since):
            raise FetchAborted(str(digest), "upstream fetch failed")

    async def aclose(self) -> None:
        """Stop transfers (a later leader resumes them); let verified blobs be published."""
        for key, task in list(self._tasks.items()):
            if key not in self._publishing:
                task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _hash_prefix(path: Path, length: int, hasher: Hasher) -> None:
    with open(path, "rb") as f:
        remaining = length
        while remaining > 0 and (data := f.read(min(CHUNK, remaining))):
            hasher.update(data)
            remaining -= len(data)


