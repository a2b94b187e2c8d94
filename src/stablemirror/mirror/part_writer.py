"""Append a fetched blob to its `.part` file and hash it, with receiving, writing and hashing
overlapping instead of taking turns.

A cold pull is limited by the slowest of three steps: the event loop receiving from the
upstream, writev(2) into the page cache, and SHA-256. Done one after another for each batch
(as before) their times add up; here a writer thread and a hasher thread each take the same
batches in order from their own queue, so the pull runs at the pace of the slowest step.
Both release the GIL for their heavy work (writev, hashlib on large buffers).

Memory stays bounded: `put` waits while `depth` batches are not yet written or not yet hashed.

`receive` takes a whole upstream body still on its socket (plain_http.py) instead: the
writer thread splice(2)s it socket -> pipe -> `.part` (spliced.py: one copy, in the kernel)
and hands each region written to the hasher, which hashes it from an mmap of the page cache
and may trail the file by at most REGIONS_AHEAD regions (the wait before a clean end). A
socket that cannot be spliced is read with `recv_into` a few reused buffers (MSG_WAITALL),
each written and passed to the hasher, which hands it back once hashed. Either way the
event loop does nothing per byte. A receive error ends the job with the bytes written so
far (the leader resumes after them); a write error fails the writer, as for batches.

The writer thread writes to its own dup(2) of the file (files/fd_jobs.py), never to the
number of `f`: a leader cancelled mid-fetch closes `f` while queued batches may still be
written, and a reused number would put them into an unrelated file. It also holds dups of
`hold` (the fetch's flock) until its last write, so no new leader can start appending to
the same `.part` before this one's writes have landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from stablemirror.files.fd_jobs import close_all, dup_all
from stablemirror.mirror.plain_http import SocketBody
from stablemirror.mirror.spliced import (
    Unsupported,
    hash_region,
    open_for_offsets,
    splice_body,
)
from stablemirror.oci.digest import Hasher

IOV_MAX = 512  # below Linux's 1024 iovecs per writev
_STOP: list[bytes] = []  # sentinel batch: the threads finish after it
RECEIVE_BUFFERS = 6  # per socket job: memory is RECEIVE_BUFFERS x RECEIVE_BUFFER
RECEIVE_BUFFER = 2 << 20
# spliced regions (spliced.REGION bytes each) the hasher may lag behind the file: the bytes
# wait in the page cache, so this bounds how long the last byte waits for the hash (16:
# ~100 ms, 4: ~18 ms in bench/cold_pipeline.py), not memory
REGIONS_AHEAD = 4


@dataclass
class _SocketJob:
    """One body for the writer thread to receive; `fd` (a dup of its socket) is the job's."""

    fd: int
    head: bytes
    length: int
    done: asyncio.Future[tuple[int, str | None]]
    free: queue.SimpleQueue[bytearray] = field(default_factory=queue.SimpleQueue)
    allocated: int = 0

    def take_buffer(self) -> bytearray:
        """A free buffer; a new one (made on the writer thread, not the loop's) while
        fewer than RECEIVE_BUFFERS exist, so the first recv need not wait for all of them."""
        if self.free.empty() and self.allocated < RECEIVE_BUFFERS:
            self.allocated += 1
            return bytearray(RECEIVE_BUFFER)
        return self.free.get()


@dataclass(frozen=True)
class _Region:
    """Bytes [start, end) of the `.part`, on disk (page cache): hash them from there."""

    start: int
    end: int


@dataclass
class _Received:
    """A filled buffer: hash `view`, then give `buffer` (if pooled) back to `free`."""

    view: memoryview
    buffer: bytearray | None
    free: queue.SimpleQueue[bytearray]


class PartWriter:
    def __init__(self, f: BinaryIO, hasher: Hasher, on_written: Callable[[], None],
                 depth: int = 8, hold: Sequence[int] = (), splice: bool = True) -> None:
        self._f = f
        self._splice = splice
        self._region_slots = threading.Semaphore(REGIONS_AHEAD)
        self._hasher_gone = threading.Event()
        self._hold = tuple(hold)
        self._hasher = hasher
        self._on_written = on_written
        self._loop = asyncio.get_running_loop()
        self._write_slots = asyncio.Semaphore(depth)
        self._hash_slots = asyncio.Semaphore(depth)
        self._to_write: queue.SimpleQueue[list[bytes] | _SocketJob] = queue.SimpleQueue()
        self._to_hash: queue.SimpleQueue[list[bytes] | _Received | _Region] = \
            queue.SimpleQueue()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def put(self, batch: list[bytes]) -> None:
        """Queue one batch; returns once there is room (never after the bytes are on disk)."""
        self._raise_error()
        if not self._threads:
            self._start()
        await self._write_slots.acquire()
        await self._hash_slots.acquire()
        self._raise_error()
        self._to_write.put(batch)
        self._to_hash.put(batch)

    async def receive(self, body: SocketBody) -> tuple[int, str | None]:
        """Write and hash `body` straight off its socket, after every queued batch; return
        the bytes received and why the body ended short (None: it did not). Closes `body`."""
        try:
            self._raise_error()
            if not self._threads:
                self._start()
            done: asyncio.Future[tuple[int, str | None]] = self._loop.create_future()
            job = _SocketJob(os.dup(body.sock.fileno()), body.head, body.length, done)
            self._to_write.put(job)
            try:
                received = await asyncio.shield(done)
            except BaseException:
                body.cut()  # the thread's recv returns now; its writes end with the job
                raise
        finally:
            body.close()
        self._raise_error()
        return received

    async def close(self) -> None:
        """Wait until every queued byte is written and hashed; raise a writer error."""
        threads = self._threads
        self.stop()
        await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))
        self._raise_error()

    def stop(self) -> None:
        """Let the threads finish what is queued and exit (also on cancellation)."""
        if not self._closed:
            self._closed = True
            if self._threads:
                self._to_write.put(_STOP)
                self._to_hash.put(_STOP)

    def _start(self) -> None:
        # now, while the caller has them open; the hasher's own dup reads _Regions
        fds = dup_all([self._f.fileno(), *self._hold, self._f.fileno()])
        writer = threading.Thread(target=self._write_loop, args=(fds[:-1],),
                                  name="part-writer", daemon=True)
        hasher = threading.Thread(target=self._hash_loop, args=(fds[-1],), name="part-hasher",
                                  daemon=True)
        try:
            writer.start()
        except BaseException:
            close_all(fds)
            raise
        self._threads.append(writer)
        try:
            hasher.start()
        except BaseException:
            os.close(fds[-1])
            raise
        self._threads.append(hasher)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _failed(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
        # wake a `put` waiting for room so it sees the error instead of waiting forever
        self._write_slots.release()
        self._hash_slots.release()

    def _write_loop(self, fds: list[int]) -> None:
        try:
            broken = False
            while (batch := self._to_write.get()) is not _STOP:
                if isinstance(batch, _SocketJob):
                    broken = self._receive_job(fds[0], batch, broken) or broken
                    continue
                if broken:
                    continue  # drain the queue: nothing after a failed write may land
                try:
                    _writev_all(fds[0], batch)
                except BaseException as e:  # reported to the event loop, not lost in a thread
                    broken = True
                    self._call(self._failed, e)
                    continue
                self._call(self._wrote)
        finally:
            close_all(fds)

    def _receive_job(self, part_fd: int, job: _SocketJob, broken: bool) -> bool:
        """Run one socket job; True if a write failed (the writer is broken from then on)."""
        received = 0
        short: str | None = None
        failed = False
        with socket.socket(fileno=job.fd) as sock:  # owns the dup: closed when the job ends
            try:
                if broken:
                    short = "writer failed"
                    return False
                if job.head:
                    _writev_all(part_fd, [job.head])
                    self._to_hash.put(_Received(memoryview(job.head), None, job.free))
                    received += len(job.head)
                    self._call(self._on_written)
                if self._splice and received < job.length:
                    spliced = self._splice_rest(part_fd, sock, job.length - received)
                    if spliced is not None:
                        received += spliced[0]
                        short = spliced[1]
                        return False
                while received < job.length:
                    buffer = job.take_buffer()
                    view = memoryview(buffer)[:min(len(buffer), job.length - received)]
                    filled, short = _recv_full(sock, view)
                    if filled:
                        _writev_all(part_fd, [view[:filled]])
                        self._to_hash.put(_Received(view[:filled], buffer, job.free))
                        received += filled
                        self._call(self._on_written)
                    else:
                        job.free.put(buffer)
                    if short is not None:
                        break
            except BaseException as e:  # a write: reported like a failed batch
                failed = True
                short = "writer failed"
                self._call(self._failed, e)
            finally:
                self._call(_resolve, job.done, (received, short))
        return failed

    def _splice_rest(self, part_fd: int, sock: socket.socket, length: int
                     ) -> tuple[int, str | None] | None:
        """The body's remaining `length` bytes by splice(2) (spliced.py); None: this socket
        cannot be spliced, nothing was taken from it (receive it with recv_into)."""
        def region(start: int, end: int) -> None:
            # at most REGIONS_AHEAD not yet hashed; a hasher that has exited (stop() while a
            # body is still spliced) hashes nothing more, so nothing is queued or waited for
            while not self._hasher_gone.is_set():
                if self._region_slots.acquire(timeout=0.5):
                    if not self._hasher_gone.is_set():
                        self._to_hash.put(_Region(start, end))
                    break
            self._call(self._on_written)

        try:
            out = open_for_offsets(part_fd)
        except OSError:  # no /proc (a bare container): nothing taken from the socket yet
            return None
        try:
            return splice_body(sock, out, os.fstat(part_fd).st_size, length, region)
        except Unsupported:
            return None
        finally:
            os.close(out)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us (shutdown)
            self._loop.call_soon_threadsafe(callback, *args)

    def _wrote(self) -> None:
        self._write_slots.release()
        self._on_written()

    def _hash_loop(self, part_fd: int) -> None:
        try:
            self._hash_queue(part_fd)
        finally:
            os.close(part_fd)
            # a hasher that stopped (stop() while a body is still spliced) never holds
            # the receiving thread up: it stops asking for slots, and one waiting wakes now.
            # (Releasing a fixed number of extra slots ran out when more regions followed.)
            self._hasher_gone.set()
            self._region_slots.release()

    def _hash_queue(self, part_fd: int) -> None:
        broken = False
        while (batch := self._to_hash.get()) is not _STOP:
            if isinstance(batch, _Region):
                try:
                    if not broken:
                        hash_region(part_fd, batch.start, batch.end, self._hasher.update)
                except BaseException as e:
                    broken = True
                    self._call(self._failed, e)
                finally:
                    self._region_slots.release()
                continue
            if isinstance(batch, _Received):
                try:
                    if not broken:
                        self._hasher.update(batch.view)  # one call, GIL released
                except BaseException as e:
                    broken = True
                    self._call(self._failed, e)
                finally:
                    batch.view.release()
                    if batch.buffer is not None:  # always: the receiving thread waits for it
                        batch.free.put(batch.buffer)
                continue
            if broken:
                continue
            try:
                for chunk in batch:
                    self._hasher.update(chunk)
            except BaseException as e:  # e.g. MemoryError: fail the fetch, never hang `put`
                broken = True
                self._call(self._failed, e)
                continue
            self._call(self._hash_slots.release)


def _writev_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Append whole pieces with writev(2): no joining copy."""
    views = [memoryview(c) for c in chunks]
    while views:
        written = os.writev(fd, views[:IOV_MAX])
        if written <= 0:
            raise OSError(errno.EIO, "writev wrote nothing")
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def _recv_full(sock: socket.socket, view: memoryview) -> tuple[int, str | None]:
    """Fill `view` from the blocking socket; (bytes received, why it stopped short)."""
    filled = 0
    while filled < len(view):
        try:
            n = sock.recv_into(view[filled:], len(view) - filled, socket.MSG_WAITALL)
        except InterruptedError:
            continue
        except OSError as e:  # EAGAIN here is SO_RCVTIMEO: the upstream went silent
            reason = "read timeout" if isinstance(e, BlockingIOError) else type(e).__name__
            return filled, reason
        if n == 0:
            return filled, "truncated"
        filled += n
    return filled, None


def _resolve(done: asyncio.Future[tuple[int, str | None]],
             result: tuple[int, str | None]) -> None:
    if not done.done():
        done.set_result(result)
