"""Blocking work on file descriptors in worker threads, on descriptors the thread owns.

A thread handed an fd *number* that someone else may close is a data leak waiting to
happen: the event loop closes a client's socket when the client resets or half-closes, a
coroutine's `finally` closes a file when it is cancelled, and the kernel hands the freed
number to the next `accept` or `open`. A thread still writing to that number then sends
one client's blob to another connection, or appends a blob's bytes to an unrelated file.

So a thread never borrows a number: `run_on_dups` takes dup(2)s of the descriptors while
the caller knows them valid (synchronously, before anything can close them), the job owns
the duplicates and closes them when it ends, and the caller may close its own copies
whenever it likes. Whatever happens to the originals, the duplicates still name the same
open file or socket, so the worst a late write can do is reach its rightful recipient.

A cancelled caller does not wait for the thread: it sets the job's `stop` event (the job
checks it between blocking steps and ends soon) and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")

FdJob = Callable[[Sequence[int], threading.Event], T]


def dup_all(fds: Sequence[int]) -> list[int]:
    """Duplicates of `fds`, all or none."""
    dups: list[int] = []
    try:
        for fd in fds:
            dups.append(os.dup(fd))
    except BaseException:
        close_all(dups)
        raise
    return dups


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):  # the others are closed even if one is gone
            os.close(fd)


async def run_on_dups(executor: Executor | None, fds: Sequence[int], job: FdJob[T]) -> T:
    """Run `job(dups, stop)` in `executor` on duplicates of `fds` taken now.

    The duplicates belong to the job: they are closed when it returns or raises, or here if
    it never got to run. A cancelled caller sets `stop` and does not wait."""
    dups = dup_all(fds)
    stop = threading.Event()
    started = threading.Lock()  # held by whichever of job / cancellation claims the dups
    claimed = False

    def owned() -> T:
        nonlocal claimed
        with started:
            if claimed:  # cancelled before it ran: the caller closed the dups already
                raise asyncio.CancelledError
            claimed = True
        try:
            return job(dups, stop)
        finally:
            close_all(dups)

    future = asyncio.get_running_loop().run_in_executor(executor, owned)
    try:
        # shielded: cancelling must not cancel a queued job behind our back (it would never
        # run and never close the dups); the claim below decides who closes them.
        return await asyncio.shield(future)
    except BaseException:
        stop.set()
        with started:
            if not claimed:
                claimed = True
                close_all(dups)
        raise


def fsync_job(fds: Sequence[int], _stop: threading.Event) -> None:
    os.fsync(fds[0])


def pread_job(count: int, offset: int) -> FdJob[bytes]:
    def job(fds: Sequence[int], _stop: threading.Event) -> bytes:
        return os.pread(fds[0], count, offset)
    return job
