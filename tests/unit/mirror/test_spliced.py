"""PartWriter.receive by splice(2) (mirror/spliced.py): the bytes land whole and are hashed
from the file, also after an unaligned resume; a socket or file that refuses splice still
gets every byte (recv_into, read + pwrite); the last bytes of a body smaller than the
wake-up threshold are not waited for; a failed write or hash ends the job instead of
hanging it. A thread on loopback TCP plays the upstream."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from stablemirror.mirror import part_writer, spliced
from stablemirror.mirror.part_writer import PartWriter
from stablemirror.mirror.plain_http import SocketBody

SIZE = 3 * spliced.REGION + 12345  # several regions and a ragged end


@contextmanager
def _upstream(data: bytes, timeout: float = 10.0, keep_open: bool = False,
              late_tail: int = 0) -> Iterator[socket.socket]:
    """A blocking socket receiving `data` from a sender thread; with `keep_open` the
    sender does not close after the body (as a keep-alive server would); the last
    `late_tail` bytes are sent a moment after the rest, once the receiver waits."""
    listener = socket.create_server(("127.0.0.1", 0))
    sock = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    listener.close()
    release = threading.Event()

    def send() -> None:
        with conn, suppress(OSError):  # a receiver that failed resets the connection
            conn.sendall(data[:len(data) - late_tail])
            if late_tail:
                time.sleep(0.3)
                conn.sendall(data[len(data) - late_tail:])
            if keep_open:
                release.wait(30)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", int(timeout), int(timeout % 1 * 1_000_000)))
    try:
        yield sock
    finally:
        release.set()
        sender.join(10)


async def _receive(part: Path, data: bytes, prefix: bytes = b"", **kw: Any
                   ) -> tuple[int, str | None, str]:
    part.write_bytes(prefix)  # noqa: ASYNC240 - a test
    hasher = hashlib.sha256(prefix)
    with _upstream(data, **kw) as sock, open(part, "ab+") as f:  # noqa: ASYNC230 - a test
        writer = PartWriter(f, hasher, lambda: None)
        received, short = await writer.receive(SocketBody("u", sock, b"", len(data)))
        await writer.close()
    return received, short, hasher.hexdigest()


def _count_splices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.splice

    def counting(src: int, dst: int, count: int, *a: Any, **kw: Any) -> int:
        n = real(src, dst, count, *a, **kw)
        calls.append(n)
        return n

    monkeypatch.setattr(spliced.os, "splice", counting)
    return calls


async def test_spliced_bytes_land_whole_and_are_hashed_from_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(SIZE)
    prefix = os.urandom(5000)  # a resumed .part: not page aligned
    calls = _count_splices(monkeypatch)
    received, short, digest = await _receive(tmp_path / "b.part", data, prefix)
    assert (received, short) == (SIZE, None)
    assert (tmp_path / "b.part").read_bytes() == prefix + data
    assert digest == hashlib.sha256(prefix + data).hexdigest()
    assert sum(calls) == 2 * SIZE  # socket -> pipe and pipe -> file, every byte


async def test_a_socket_that_refuses_splice_is_received_with_recv_into(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_kw: Any) -> int:
        raise OSError(errno.EINVAL, "splice refused")

    monkeypatch.setattr(spliced.os, "splice", refuse)
    data = os.urandom(SIZE)
    received, short, digest = await _receive(tmp_path / "b.part", data)
    assert (received, short) == (SIZE, None)
    assert (tmp_path / "b.part").read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()


async def test_without_proc_the_body_is_received_with_recv_into(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second, non-append open of the `.part` goes through /proc/self/fd; a container
    without /proc must still get the blob (by recv_into), not a failed fetch."""
    def no_proc(_fd: int) -> int:
        raise FileNotFoundError(errno.ENOENT, "no /proc")

    monkeypatch.setattr(part_writer, "open_for_offsets", no_proc)
    data = os.urandom(SIZE)
    received, short, digest = await _receive(tmp_path / "b.part", data)
    assert (received, short) == (SIZE, None)
    assert digest == hashlib.sha256(data).hexdigest()


async def test_a_file_that_refuses_splice_writes_gets_the_piped_bytes_by_pwrite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.splice

    def no_file_writes(src: int, dst: int, count: int, *a: Any, **kw: Any) -> int:
        if kw.get("offset_dst") is not None:
            raise OSError(errno.EINVAL, "this file system does not splice")
        return real(src, dst, count, *a, **kw)

    monkeypatch.setattr(spliced.os, "splice", no_file_writes)
    data = os.urandom(SIZE)
    received, short, digest = await _receive(tmp_path / "b.part", data)
    assert (received, short) == (SIZE, None)
    assert (tmp_path / "b.part").read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()


async def test_the_tail_below_the_wake_up_threshold_is_not_waited_for(
        tmp_path: Path) -> None:
    """SO_RCVLOWAT wakes the receiver per LOW_WATER bytes: for the last, smaller piece of a
    body whose sender keeps the connection open, it must be lowered, or the receive sits
    until the read timeout."""
    data = os.urandom(spliced.LOW_WATER * 3 + 777)
    t0 = time.monotonic()
    received, short, digest = await _receive(tmp_path / "b.part", data, timeout=8,
                                             keep_open=True, late_tail=777)
    assert (received, short) == (len(data), None)
    assert digest == hashlib.sha256(data).hexdigest()
    assert time.monotonic() - t0 < 5


async def test_a_failed_spliced_write_fails_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.splice

    def disk_full(src: int, dst: int, count: int, *a: Any, **kw: Any) -> int:
        if kw.get("offset_dst") is not None:
            raise OSError(errno.ENOSPC, "no space left")
        return real(src, dst, count, *a, **kw)

    monkeypatch.setattr(spliced.os, "splice", disk_full)
    data = os.urandom(SIZE)
    part = tmp_path / "b.part"
    with _upstream(data) as sock, open(part, "ab+") as f:  # noqa: ASYNC230 - a test
        writer = PartWriter(f, hashlib.sha256(), lambda: None)
        with pytest.raises(spliced.WriteFailed):
            await writer.receive(SocketBody("u", sock, b"", SIZE))
        with pytest.raises(spliced.WriteFailed):
            await writer.close()
    assert part.read_bytes() == b""


async def test_a_hasher_that_fails_does_not_hold_the_receive_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiving thread waits for the hasher after REGIONS_AHEAD regions: a hasher that
    broke must still let it go on (and the error reach the caller)."""
    def broken(*_a: Any) -> None:
        raise MemoryError("no room to map")

    monkeypatch.setattr(part_writer, "hash_region", broken)
    monkeypatch.setattr(part_writer, "REGIONS_AHEAD", 1)
    data = os.urandom(SIZE)
    with _upstream(data) as sock, open(tmp_path / "b.part", "ab+") as f:  # noqa: ASYNC230
        writer = PartWriter(f, hashlib.sha256(), lambda: None)
        with pytest.raises(MemoryError):
            await asyncio.wait_for(writer.receive(SocketBody("u", sock, b"", SIZE)), 20)
        with pytest.raises(MemoryError):
            await asyncio.wait_for(writer.close(), 20)


async def test_a_stopped_hasher_does_not_hold_the_receive_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() (a cancelled leader) while a body is still being spliced: the hasher exits
    after what was queued, and the receiving thread must not wait for it forever."""
    real = part_writer.hash_region

    def slow(*a: Any) -> None:
        time.sleep(0.05)
        real(*a)

    monkeypatch.setattr(part_writer, "hash_region", slow)
    monkeypatch.setattr(part_writer, "REGIONS_AHEAD", 1)
    size = 10 * spliced.REGION + 12345  # more regions after the stop than slots to spare
    data = os.urandom(size)
    with _upstream(data) as sock, open(tmp_path / "b.part", "ab+") as f:  # noqa: ASYNC230
        writer = PartWriter(f, hashlib.sha256(), lambda: None)
        receiving = asyncio.ensure_future(writer.receive(SocketBody("u", sock, b"", size)))
        await asyncio.sleep(0.01)
        writer.stop()
        received, short = await asyncio.wait_for(receiving, 20)
        await asyncio.wait_for(writer.close(), 20)
    assert (received, short) == (size, None)
