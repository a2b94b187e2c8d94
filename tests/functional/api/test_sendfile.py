"""No response ever carries bytes that are not its own (api/sendfile.py).

Blob bodies go out by sendfile(2) from worker threads. A client that resets, half-closes
or reads slowly makes the event loop close its socket while such a thread may still be
sending; if the thread wrote to the socket's fd *number*, the next accepted connection
(which gets the same number) would receive another client's blob. Here aborting clients of
every kind run interleaved with many fresh connections, on 1 and 2 workers, for hosted
blobs and for blobs a mirror is still fetching, and every fresh connection's bytes are
checked: the status line first, a body of exactly Content-Length bytes with the right
digest, and nothing after it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import MiB, push_blob, running_server

ServerFactory = Callable[..., LiveServer]
BIG = 48 * MiB
ROUNDS = 10          # each round: two aborting clients of every kind
PROBERS = 6          # threads opening fresh connections all the while
MAX_PROBES = 3000    # per prober thread
DEADLINE = 90.0      # seconds for all rounds of one case
IO_TIMEOUT = 20.0


@dataclass
class Target:
    host: str
    port: int
    big_path: str            # the blob the aborting clients ask for
    big: bytes
    small_path: str          # the blob the fresh connections ask for
    small: bytes


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    probes: int = 0
    aborts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, problem: str) -> None:
        with self.lock:
            self.problems.append(problem)


def _connect(t: Target, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window starts small
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(IO_TIMEOUT)
    s.connect((t.host, t.port))
    return s


def _request(path: str, close: bool = True) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: registry\r\n{conn}\r\n".encode()


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a client killed mid-transfer does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _read_head(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            raise EOFError(f"closed before the headers: {buf[:200]!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while data := s.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    raise ValueError(f"no Content-Length in {head[:300]!r}")


# -- the aborting clients ------------------------------------------------------------------------
# Each returns (response head, body bytes it received); the caller checks that the body is
# a prefix of the blob it asked for: a cut is allowed, foreign bytes are not.
def rst_after_headers(t: Target) -> tuple[bytes, bytes]:
    s = _connect(t)
    s.sendall(_request(t.big_path))
    head, got = _read_head(s)
    _reset(s)
    return head, got


def rst_mid_body(t: Target) -> tuple[bytes, bytes]:
    s = _connect(t)
    s.sendall(_request(t.big_path))
    head, got = _read_head(s)
    want = len(got) + 2 * MiB
    while len(got) < want:
        data = s.recv(1 << 20)
        if not data:
            break
        got += data
    _reset(s)
    return head, got


def slow_reader(t: Target) -> tuple[bytes, bytes]:
    s = _connect(t, rcvbuf=4096)
    s.sendall(_request(t.big_path))
    head, got = _read_head(s)
    for _ in range(20):
        got += s.recv(4096)
        time.sleep(0.005)
    _reset(s)
    return head, got


def half_closed(t: Target) -> tuple[bytes, bytes]:
    """Stops sending after its request (shutdown SHUT_WR), then reads until the server closes.
    The server may drop it (the loop sees EOF) or answer it; either way only its own bytes."""
    s = _connect(t)
    s.sendall(_request(t.big_path))
    s.shutdown(socket.SHUT_WR)
    try:
        raw = _read_all(s)
    finally:
        s.close()
    if not raw:
        return b"HTTP/1.1 200 (dropped before the headers)", b""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


ABORTERS = (rst_after_headers, rst_mid_body, slow_reader, half_closed)


def check_own_prefix(t: Target, name: str, head: bytes, body: bytes, findings: Findings) -> None:
    if not head.startswith(b"HTTP/1.1 200"):
        findings.add(f"{name}: status {head[:80]!r}")
    elif body != t.big[: len(body)]:
        findings.add(f"{name}: {len(body)} body bytes that are not a prefix of its blob")


# -- the fresh connections -------------------------------------------------------------------------
def probe(t: Target, findings: Findings, n: int) -> None:
    path = t.small_path if n % 2 else "/v2/"
    try:
        s = _connect(t)
        try:
            s.sendall(_request(path))
            raw = _read_all(s)
        finally:
            s.close()
    except OSError as e:
        findings.add(f"probe {path}: {e!r}")
        return
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not raw.startswith(b"HTTP/1.1 200 ") or not sep:
        findings.add(f"probe {path}: {len(raw)} bytes starting {raw[:48]!r}")
        return
    length = _content_length(head)
    if len(body) != length:
        findings.add(f"probe {path}: {len(body) - length} bytes beyond its body")
    elif path == t.small_path and body != t.small:
        findings.add(f"probe {path}: a body that is not its blob")
    with findings.lock:
        findings.probes += 1


def hammer(targets: list[Target]) -> Findings:
    """Aborting clients, one round per target, while fresh connections keep arriving from
    PROBERS threads the whole time; bounded in rounds, probes and time."""
    findings = Findings()
    deadline = time.monotonic() + DEADLINE
    stop = threading.Event()

    def keep_probing(worker: int) -> None:
        for n in range(MAX_PROBES):
            if stop.is_set() or time.monotonic() > deadline:
                return
            probe(targets[0], findings, worker + n)

    with ThreadPoolExecutor(max_workers=PROBERS + 2 * len(ABORTERS)) as pool:
        probers = [pool.submit(keep_probing, w) for w in range(PROBERS)]
        try:
            for target in targets:
                if time.monotonic() > deadline:
                    break
                kinds = ABORTERS * 2
                aborts = [pool.submit(fn, target) for fn in kinds]
                for fn, job in zip(kinds, aborts, strict=True):
                    try:
                        head, body = job.result(timeout=IO_TIMEOUT * 3)
                    except (OSError, EOFError):
                        continue  # an aborting client may see its own transfer cut
                    check_own_prefix(target, fn.__name__, head, body, findings)
                findings.aborts += len(kinds)
        finally:
            stop.set()
            for job in probers:
                job.result(timeout=IO_TIMEOUT * 3)
    return findings


def _assert_clean(findings: Findings, server: LiveServer) -> None:
    assert findings.probes > 0
    assert not findings.problems, (
        f"{len(findings.problems)} problems in {findings.probes} clean probes: "
        f"{findings.problems[:10]}\n{server.log()[-3000:]}")
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]


@pytest.fixture(scope="module")
def big_blob() -> Iterator[tuple[bytes, str]]:
    data = os.urandom(BIG)
    yield data, "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("workers", [1, 2])
def test_aborted_hosted_transfers_never_leak_into_other_connections(
        server_factory: ServerFactory, big_blob: tuple[bytes, str], workers: int) -> None:
    server = server_factory(workers=workers)
    data, digest = big_blob
    assert push_blob(server.url, "leak/big", data) == digest
    small = os.urandom(4096)
    small_digest = push_blob(server.url, "leak/small", small)
    t = Target("127.0.0.1", server.port, f"/v2/leak/big/blobs/{digest}", data,
               f"/v2/leak/small/blobs/{small_digest}", small)
    _assert_clean(hammer([t] * ROUNDS), server)


@pytest.mark.parametrize("workers", [1, 2])
def test_aborted_in_flight_mirror_transfers_never_leak(
        server_factory: ServerFactory, tmp_path: Path, workers: int) -> None:
    """The mirror sends a blob it is still fetching from the growing file (send_regions):
    the upstream is throttled so that every round's blob is in flight while clients abort."""
    rounds = 6
    with running_server(tmp_path / "upstream") as origin, \
            FaultProxy(origin.host, "upstream") as proxy:
        small = os.urandom(4096)
        small_digest = push_blob(origin.url, "leak/small", small)
        bigs = [os.urandom(24 * MiB) for _ in range(rounds)]
        digests = [push_blob(origin.url, "leak/big", data) for data in bigs]
        mirror = server_factory("--upstream", proxy.url, workers=workers)
        # warm the small blob, then throttle: each blob takes ~0.5 s to arrive, slower than
        # a fast client reads and faster than a slow one
        probe(Target("127.0.0.1", mirror.port, "/v2/", b"", f"/v2/leak/small/blobs/"
                     f"{small_digest}", small), Findings(), 1)
        proxy.set("pass", rate=48 * MiB)

        def fresh(r: int) -> Target:
            return Target("127.0.0.1", mirror.port, f"/v2/leak/big/blobs/{digests[r]}", bigs[r],
                          f"/v2/leak/small/blobs/{small_digest}", small)

        findings = hammer([fresh(r) for r in range(rounds)])
        _assert_clean(findings, mirror)
