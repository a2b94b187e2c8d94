"""Move an upstream body from its socket into the `.part` file with splice(2), and hash
it from the page cache: no copy of the bytes through user space.

The `recv_into` + `write` path (part_writer.py) copies every byte twice on the CPU: socket
buffer -> user buffer, user buffer -> page cache. Here the socket's pages go into a pipe
by reference and the kernel copies them once, into the page cache (splice pipe -> file);
the hasher then reads those page-cache pages through a read-only mmap of the region just
written, so the bytes hashed are the bytes clients are sent (and later published).

splice(2) cannot write to a file opened with O_APPEND (the `.part` is), so the bytes go
through a second open file description of the same inode (`/proc/self/fd/N`) at explicit
offsets. A socket that refuses splice (EINVAL, ENOSYS) before the first byte is reported
as `Unsupported` (the caller receives the body with `recv_into` instead); a file that
refuses splice writes gets the bytes already in the pipe by read + pwrite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import socket
from collections.abc import Callable

PIPE_BYTES = 1 << 20  # the pipe's capacity (Linux's default pipe-max-size)
REGION = 4 << 20  # bytes per hand-over to the hasher and per "more bytes on disk"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# the socket's wake-up threshold: one wake-up per this many bytes, not per segment
LOW_WATER = 256 << 10
_REFUSED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF)


class Unsupported(Exception):
    """splice(2) refused this socket or file before any byte moved."""


class WriteFailed(Exception):
    """Writing to the `.part` failed (not the upstream): the writer is broken."""


def open_for_offsets(part_fd: int) -> int:
    """A new, non-append write description of the file `part_fd` names."""
    return os.open(f"/proc/self/fd/{part_fd}", os.O_WRONLY | os.O_CLOEXEC)


def splice_body(sock: socket.socket, out_fd: int, pos: int, length: int,
                region_done: Callable[[int, int], None]) -> tuple[int, str | None]:
    """Move `length` body bytes from the blocking socket `sock` into `out_fd` at `pos` on;
    `region_done(start, end)` after each REGION and at the end. Returns (bytes moved, why
    the body ended short or None). Raises Unsupported (nothing moved) or WriteFailed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
        drain = _Drain(read_end, out_fd)
        moved = 0
        start = pos
        short: str | None = None
        low_water = 0
        try:
            while moved < length:
                # wake up once per LOW_WATER bytes, never wait for bytes the body lacks
                want = min(LOW_WATER, length - moved)
                if want != low_water:
                    low_water = want
                    with contextlib.suppress(OSError):  # only fewer wake-ups lost
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low_water)
                try:
                    n = os.splice(sock.fileno(), write_end, min(PIPE_BYTES, length - moved),
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
                except InterruptedError:
                    continue
                except OSError as e:
                    if moved == 0 and e.errno in _REFUSED:
                        raise Unsupported(str(e)) from e
                    # EAGAIN here is SO_RCVTIMEO: the upstream went silent
                    short = "read timeout" if isinstance(e, BlockingIOError) else \
                        type(e).__name__
                    break
                if n == 0:
                    short = "truncated"
                    break
                drain(pos, n)
                pos += n
                moved += n
                if pos - start >= REGION:
                    region_done(start, pos)
                    start = pos
        finally:
            if pos > start:  # also after a failed write: what landed before it is whole
                region_done(start, pos)
        return moved, short
    finally:
        os.close(read_end)
        os.close(write_end)


class _Drain:
    """Empties the pipe into the file at given offsets: by splice(2), or (a file system
    that refuses splice writes) by read + pwrite, the bytes being in the pipe already."""

    def __init__(self, read_end: int, out_fd: int) -> None:
        self.read_end = read_end
        self.out_fd = out_fd
        self.copy = False

    def __call__(self, pos: int, count: int) -> None:
        while count > 0:
            try:
                if self.copy:
                    n = _pwrite_all(self.out_fd, os.read(self.read_end, count), pos)
                else:
                    n = os.splice(self.read_end, self.out_fd, count, offset_dst=pos,
                                  flags=os.SPLICE_F_MOVE)
            except InterruptedError:
                continue
            except OSError as e:
                if not self.copy and e.errno in _REFUSED:
                    self.copy = True
                    continue
                raise WriteFailed(f"{type(e).__name__}: {e}") from e
            if n <= 0:
                raise WriteFailed("wrote nothing")
            pos += n
            count -= n


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        if n <= 0:
            raise OSError(errno.EIO, "pwrite wrote nothing")
        view, pos = view[n:], pos + n
    return len(data)


def hash_region(fd: int, start: int, end: int, update: Callable[[memoryview], None]) -> None:
    """update() with the bytes [start, end) of the file `fd`, read through an mmap of its
    page cache (no copy); one call, so hashlib releases the GIL for all of it."""
    if end <= start:
        return
    base = start - start % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    with mmap.mmap(fd, end - base, flags=flags, prot=mmap.PROT_READ, offset=base) as mapped:
        view = memoryview(mapped)
        try:
            update(view[start - base:])
        finally:
            view.release()
