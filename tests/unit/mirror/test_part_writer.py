"""PartWriter: ordered append + hash on two threads, bounded, errors surface in the loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from pathlib import Path

import pytest

from stablemirror.mirror.part_writer import PartWriter


def _batches(seed: int, count: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    return [[rng.randbytes(rng.randint(1, 300_000)) for _ in range(rng.randint(1, 6))]
            for _ in range(count)]


async def test_bytes_land_in_order_and_hash_matches(tmp_path: Path) -> None:
    batches = _batches(1, 60)
    expected = b"".join(b"".join(batch) for batch in batches)
    written_calls = 0

    def on_written() -> None:
        nonlocal written_calls
        written_calls += 1

    hasher = hashlib.sha256()
    with open(tmp_path / "blob.part", "ab+") as f:  # noqa: ASYNC230 - a test
        writer = PartWriter(f, hasher, on_written, depth=2)
        for batch in batches:
            await writer.put(batch)
        await writer.close()
    assert (tmp_path / "blob.part").read_bytes() == expected
    assert hasher.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert written_calls == len(batches)


async def test_appends_after_existing_bytes(tmp_path: Path) -> None:
    part = tmp_path / "blob.part"
    part.write_bytes(b"resumed-prefix:")
    hasher = hashlib.sha256(b"resumed-prefix:")
    with open(part, "ab+") as f:  # noqa: ASYNC230 - a test
        writer = PartWriter(f, hasher, lambda: None)
        await writer.put([b"rest", b"-of-it"])
        await writer.close()
    assert part.read_bytes() == b"resumed-prefix:rest-of-it"
    assert hasher.hexdigest() == hashlib.sha256(b"resumed-prefix:rest-of-it").hexdigest()


async def test_put_waits_while_depth_batches_are_in_flight(tmp_path: Path) -> None:
    """The bound is real: with the writer blocked, the third put does not return."""
    read_fd, write_fd = os.pipe()  # a pipe nobody reads blocks writev once it is full

    def read_all() -> int:
        total = 0
        while chunk := os.read(read_fd, 1 << 20):
            total += len(chunk)
        return total

    big = [b"x" * (1 << 20)]
    with os.fdopen(write_fd, "wb", buffering=0) as f:
        writer = PartWriter(f, hashlib.sha256(), lambda: None, depth=2)
        await writer.put(big)
        await writer.put(big)
        third = asyncio.ensure_future(writer.put(big))
        await asyncio.sleep(0.3)
        assert not third.done()
        reader = asyncio.ensure_future(asyncio.to_thread(read_all))
        await asyncio.wait_for(third, 5)
        await asyncio.wait_for(writer.close(), 5)
    assert await asyncio.wait_for(reader, 5) == 3 << 20
    os.close(read_fd)


async def test_write_error_is_raised_and_nothing_after_it_lands(tmp_path: Path) -> None:
    part = tmp_path / "blob.part"
    part.write_bytes(b"")
    with open(part, "rb") as f:  # noqa: ASYNC230 - read-only: writev fails with EBADF
        writer = PartWriter(f, hashlib.sha256(), lambda: None, depth=1)
        await writer.put([b"abc"])
        with pytest.raises(OSError):
            for _ in range(50):  # the error reaches the loop within a few puts
                await writer.put([b"more"])
                await asyncio.sleep(0.01)
        with pytest.raises(OSError):
            await writer.close()
    assert part.read_bytes() == b""


class _BrokenHasher:
    def update(self, data: bytes, /) -> None:
        raise MemoryError("no room to hash")

    def hexdigest(self) -> str:
        return ""

    def copy(self) -> _BrokenHasher:
        return self


async def test_hash_error_is_raised_instead_of_hanging(tmp_path: Path) -> None:
    with open(tmp_path / "blob.part", "ab+") as f:  # noqa: ASYNC230 - a test
        writer = PartWriter(f, _BrokenHasher(), lambda: None, depth=1)
        with pytest.raises(MemoryError):
            for _ in range(50):  # with depth 1, the second put waits for the first hash
                await asyncio.wait_for(writer.put([b"x" * 4096]), 5)
        with pytest.raises(MemoryError):
            await writer.close()


async def test_queued_writes_after_the_file_is_closed_never_land_in_a_reused_fd(
        tmp_path: Path) -> None:
    """A cancelled leader closes its file while batches are still queued: they must go to
    the file they were meant for (the writer's own dup), not to whatever file is opened
    next under the freed number; and the fetch lock it holds stays locked until then."""
    import fcntl

    read_fd, write_fd = os.pipe()
    lock_path = tmp_path / "blob.lock"
    lock_fd = os.open(lock_path, os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    f = os.fdopen(write_fd, "wb", buffering=0)
    writer = PartWriter(f, hashlib.sha256(), lambda: None, depth=8, hold=(lock_fd,))
    big = [b"y" * (1 << 20)]
    for _ in range(3):  # more than a pipe holds: the writer thread blocks in writev
        await writer.put(big)
    writer.stop()
    number = f.fileno()
    f.close()
    os.close(lock_fd)
    with open(tmp_path / "bystander", "wb+") as bystander:  # noqa: ASYNC230 - a test
        assert bystander.fileno() == number  # the freed number is reused at once
        other = os.open(lock_path, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # the writer still holds the fetch lock
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        received = 0
        while received < 3 << 20:  # drain: the writer finishes on its own dup
            chunk = await asyncio.to_thread(os.read, read_fd, 1 << 20)
            assert chunk
            received += len(chunk)
        await asyncio.wait_for(writer.close(), 5)
        bystander.seek(0)
        assert bystander.read() == b""
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the writer's dup
    os.close(other)
    os.close(read_fd)
