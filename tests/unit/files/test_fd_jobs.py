"""run_on_dups: a thread works on descriptors it owns, whatever happens to the originals."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stablemirror.files.fd_jobs import pread_job, run_on_dups


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_job_writes_to_its_own_file_after_the_number_is_reused(
        tmp_path: Path) -> None:
    """The caller closes the original while the job runs, and the freed number is reused at
    once by an unrelated file: the job's bytes still reach the file they were meant for."""
    target = tmp_path / "target"
    fd = os.open(target, os.O_CREAT | os.O_WRONLY)
    go = threading.Event()

    def job(fds: Sequence[int], _stop: threading.Event) -> None:
        assert go.wait(5)
        os.write(fds[0], b"meant for target")

    pending = asyncio.ensure_future(run_on_dups(None, (fd,), job))
    await asyncio.sleep(0.05)
    os.close(fd)
    bystander = os.open(tmp_path / "bystander", os.O_CREAT | os.O_RDWR)
    assert bystander == fd
    go.set()
    await asyncio.wait_for(pending, 5)
    assert target.read_bytes() == b"meant for target"
    assert os.pread(bystander, 100, 0) == b""
    os.close(bystander)


async def test_cancelled_while_running_sets_stop_and_the_job_closes_its_dups(
        tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    before = _open_fds()
    running, ended = threading.Event(), threading.Event()

    def job(_fds: Sequence[int], stop: threading.Event) -> None:
        running.set()
        stop.wait(5)
        assert stop.is_set()
        ended.set()

    task = asyncio.ensure_future(run_on_dups(None, (fd,), job))
    await asyncio.to_thread(running.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(ended.wait, 5)
    for _ in range(100):  # the job's finally closes the dup just after `ended`
        if _open_fds() == before:
            break
        await asyncio.sleep(0.01)
    assert _open_fds() == before
    os.close(fd)


async def test_cancelled_before_it_ran_closes_the_dups_and_never_runs(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    ran: list[int] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        blocker = threading.Event()
        pool.submit(blocker.wait, 5)  # the only thread is busy: our job stays queued
        before = _open_fds()
        task = asyncio.ensure_future(
            run_on_dups(pool, (fd,), lambda fds, _stop: ran.append(fds[0])))
        await asyncio.sleep(0.05)
        assert _open_fds() == before + 1  # the dup exists while it waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _open_fds() == before
        blocker.set()
    assert ran == []
    os.close(fd)


async def test_an_error_in_the_job_is_raised_and_its_dups_closed(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    before = _open_fds()

    def job(_fds: Sequence[int], _stop: threading.Event) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await run_on_dups(None, (fd,), job)
    assert _open_fds() == before  # closed by the job's finally, before the error arrives
    os.close(fd)


async def test_pread_job_reads_through_its_dup(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    assert await run_on_dups(None, (fd,), pread_job(4, 3)) == b"3456"
    os.close(fd)
