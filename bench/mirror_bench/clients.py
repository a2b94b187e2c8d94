"""The clients of the mirror benchmarks: threads on raw sockets that count (and, with
--client-verify, hash) what they get, and the warm-up pulls that come before any timed one."""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import threading
import time
from typing import Any

from harness.client import expect, http
from harness.common import HOST, BenchError, MiB
from harness.data import Blob
from harness.transfers import push_small_blob

from mirror_bench.targets import REPO


def raw_pull(port: int, blob: Blob, start: threading.Barrier, timeout: float, verify: bool
             ) -> dict[str, Any]:
    """One GET on a raw socket, its bytes counted and (with `verify`) hashed as they arrive.
    recv_into and sha256 release the GIL, so N of these in threads cost about as much as N
    curls to /dev/null (plus the hashing); without `verify` 32 of them stay far below what
    a mirror needs to serve them, so the client is not the bottleneck."""
    out: dict[str, Any] = {"ok": False, "status": 0, "bytes": 0, "ttfb": None, "total": None,
                           "t0": None, "t1": None, "error": ""}
    try:
        start.wait(timeout=60)
    except threading.BrokenBarrierError:
        out["error"] = "start barrier broken"
        return out
    t0 = time.perf_counter()
    out["t0"] = t0
    deadline = t0 + timeout
    path = f"/v2/{REPO}/blobs/{blob.digest}"
    try:
        with socket.create_connection((HOST, port), timeout=60) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                "User-Agent: stablemirror-bench/1\r\nConnection: close\r\n\r\n".encode())
            buf = bytearray(1 * MiB)
            mv = memoryview(buf)
            head = bytearray()
            while b"\r\n\r\n" not in head:
                n = sock.recv_into(buf)
                if n == 0:
                    raise BenchError("closed before the response headers")
                if out["ttfb"] is None:
                    out["ttfb"] = time.perf_counter() - t0
                head += mv[:n]
                if len(head) > 2 * MiB:
                    raise BenchError("response headers too large")
            header, _, rest = bytes(head).partition(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            out["status"] = int(lines[0].split(" ")[1])
            length = -1
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if out["status"] != 200 or length < 0:
                raise BenchError(f"HTTP {out['status']}, Content-Length {length}")
            h = hashlib.sha256() if verify else None
            if h is not None:
                h.update(rest)
            got = len(rest)
            while got < length:
                n = sock.recv_into(buf, min(len(buf), length - got))
                if n == 0:
                    break
                if h is not None:
                    h.update(mv[:n])
                got += n
                if time.perf_counter() > deadline:
                    raise BenchError(f"gave up after {timeout:.0f}s")
            out["bytes"] = got
            out["t1"] = time.perf_counter()
            out["total"] = out["t1"] - t0
            if got != blob.size:
                raise BenchError(f"{got} bytes of {blob.size}")
            if h is not None and "sha256:" + h.hexdigest() != blob.digest:
                raise BenchError("wrong sha256")
            out["ok"] = True
    except (OSError, BenchError, ValueError, IndexError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        if out["t1"] is None:
            out["t1"] = time.perf_counter()
    return out


def concurrent_pulls(port: int, blob: Blob, n: int, timeout: float, verify: bool
                     ) -> dict[str, Any]:
    barrier = threading.Barrier(n)
    results: list[dict[str, Any]] = [{} for _ in range(n)]

    def client(i: int) -> None:
        results[i] = raw_pull(port, blob, barrier, timeout, verify)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 90)
    if any(t.is_alive() for t in threads):
        raise BenchError("a client thread did not finish in time")
    starts = [r["t0"] for r in results if r.get("t0") is not None]
    ends = [r["t1"] for r in results if r.get("t1") is not None]
    totals = [r["total"] for r in results if r.get("total") is not None]
    ttfbs = [r["ttfb"] for r in results if r.get("ttfb") is not None]
    return {
        "clients": n,
        "ok": sum(1 for r in results if r.get("ok")),
        "errors": sorted({r["error"] for r in results if r.get("error")}),
        "wall": (max(ends) - min(starts)) if starts and ends else None,
        "client_median": statistics.median(totals) if totals else None,
        "client_max": max(totals) if totals else None,
        "ttfb_median": statistics.median(ttfbs) if ttfbs else None,
        "ttfb_max": max(ttfbs) if ttfbs else None,
    }



def warm_up(upstream_port: int, ports: list[int]) -> None:
    """Small never-seen blobs through every server, so that connection pools, lazy imports
    and each worker's first upstream contact are not billed to the first timed pull."""
    for _ in range(4):
        data = os.urandom(256 * 1024)
        digest, _ = push_small_blob(upstream_port, REPO, data)
        for port in ports:
            resp = expect(http(port, "GET", f"/v2/{REPO}/blobs/{digest}", timeout=30), (200,),
                          "warm-up GET")
            if resp.body != data:
                raise BenchError("warm-up GET returned different bytes")



def sha256_mbps() -> float:
    """Best of 3: hashlib SHA-256 over 256 MiB in 4 MiB updates."""
    data = os.urandom(4 * MiB)
    best = 0.0
    for _ in range(3):
        h = hashlib.sha256()
        t0 = time.perf_counter()
        for _ in range(64):
            h.update(data)
        best = max(best, 256 * MiB / (time.perf_counter() - t0) / 1e6)
    return best

