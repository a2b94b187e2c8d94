#!/usr/bin/env python3
"""The cold-pull pipeline alone (docs/cold-pull.md): PartWriter.receive of one body from a
sendfile(2) "upstream" on loopback, with a "client" that sendfile(2)s the growing `.part`
to a socket whose other end only counts bytes, as the mirror's clients do.

No HTTP, no servers, no event-loop work besides what PartWriter itself does: the time until
a client would be done (all bytes sent and the digest computed, since the last byte waits
for it) and the CPU seconds of each thread of the pipeline, for comparing designs of
mirror/part_writer.py in interleaved rounds on a loaded machine.

    .venv/bin/python bench/cold_pipeline.py --size-mib 1024 --rounds 5

Each round receives a fresh `.part` (the source file stays in the page cache); `sync` runs
before each round. Prints one line per round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from stablemirror.mirror import part_writer
from stablemirror.mirror.part_writer import PartWriter
from stablemirror.mirror.plain_http import SocketBody

MiB = 1 << 20


def _name_kernel_threads() -> None:
    """Give every Python thread its name in /proc (comm), so CPU can be told apart."""
    libc = ctypes.CDLL(None)
    run = threading.Thread.run

    def named_run(self: threading.Thread) -> None:
        libc.prctl(15, self.name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
        run(self)

    threading.Thread.run = named_run  # type: ignore[method-assign]


def _task_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by thread name (/proc comm)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _upstream(conn: socket.socket, source: Path, size: int) -> None:
    with conn, open(source, "rb") as f:
        offset = 0
        while offset < size:
            offset += os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)


def _sink(conn: socket.socket, size: int, done: list[float]) -> None:
    buf = bytearray(MiB)
    got = 0
    with conn:
        while got < size and (n := conn.recv_into(buf)):
            got += n
    done.append(time.perf_counter())


def _client(part: Path, size: int, out: socket.socket, written: threading.Event,
            finished: threading.Event) -> None:
    """Follows the `.part` as PartWriter reports writes (the mirror's regions + sendfile)."""
    fd = os.open(part, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            have = os.fstat(fd).st_size
            if have > pos:
                pos += os.sendfile(out.fileno(), fd, pos, have - pos)
                continue
            if finished.is_set() and os.fstat(fd).st_size <= pos:
                break
            written.wait(0.01)
            written.clear()
    finally:
        os.close(fd)
        out.close()


class CpuSampler:
    """Each thread's CPU seconds, read every 100 ms (threads that exit keep their last
    reading), summed by thread name; and the whole process's CPU from getrusage."""

    def __init__(self) -> None:
        self.first: dict[str, float] = _task_cpu()
        self.last: dict[str, float] = dict(self.first)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.rusage0 = os.times()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            self.last.update(_task_cpu())

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.last.update(_task_cpu())

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, v in self.last.items():
            name = key.split(":")[0]
            out[name] = out.get(name, 0.0) + v - self.first.get(key, 0.0)
        t = os.times()
        out["TOTAL"] = t.user + t.system - self.rusage0.user - self.rusage0.system
        return out


async def one_round(source: Path, size: int, digest: str, work: Path, variant: str
                    ) -> dict[str, float]:
    part = work / "blob.part"
    regions_ahead = part_writer.REGIONS_AHEAD
    listener = socket.create_server(("127.0.0.1", 0))
    sock = socket.create_connection(listener.getsockname())
    up_conn, _ = listener.accept()
    listener.close()
    up = threading.Thread(target=_upstream, args=(up_conn, source, size), name="upstream")
    up.start()
    # loopback TCP like the real client
    cl = socket.create_server(("127.0.0.1", 0))
    c_out = socket.create_connection(cl.getsockname())
    c_in, _ = cl.accept()
    cl.close()
    done: list[float] = []
    sink = threading.Thread(target=_sink, args=(c_in, size, done), name="sink")
    written, finished = threading.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    sampler = CpuSampler().__enter__()
    t0 = time.perf_counter()
    f = open(part, "ab+")  # noqa: ASYNC230, SIM115 - a benchmark
    client = threading.Thread(target=_client, args=(part, size, c_out, written, finished),
                              name="client")
    sink.start()
    client.start()
    hasher = hashlib.sha256()
    kind, _, ahead = variant.partition(":")
    if ahead:
        part_writer.REGIONS_AHEAD = int(ahead)
    writer = PartWriter(f, hasher, written.set, splice=kind == "splice")
    body = SocketBody("bench", sock, b"", size)
    received, short = await writer.receive(body)
    await writer.close()
    t_hashed = time.perf_counter()
    f.close()
    finished.set()
    written.set()
    await loop.run_in_executor(None, client.join)
    await loop.run_in_executor(None, sink.join)
    up.join()
    sampler.__exit__()
    if received != size or short is not None or hasher.hexdigest() != digest:
        raise SystemExit(f"wrong result: {received} bytes, short {short}")
    part_writer.REGIONS_AHEAD = regions_ahead
    # a real client's last byte waits for the digest: it is done when both are
    return {"wall": max(done[0], t_hashed) - t0, "sent": done[0] - t0,
            "hashed": t_hashed - t0, **sampler.by_name()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="recv,splice",
                   help="receive paths, interleaved: recv (recv_into + write), splice, "
                   "splice:N (at most N regions not yet hashed)")
    p.add_argument("--tmpdir")
    args = p.parse_args()
    size = args.size_mib * MiB
    _name_kernel_threads()
    with tempfile.TemporaryDirectory(prefix="cold-pipeline-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        h = hashlib.sha256()
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                piece = os.urandom(MiB)
                h.update(piece)
                f.write(piece)
        rows: list[tuple[str, dict[str, float]]] = []
        variants = args.variants.split(",")
        for i in range(args.rounds):
            for variant in variants[i % len(variants):] + variants[:i % len(variants)]:
                (work / "blob.part").unlink(missing_ok=True)
                subprocess.run(["sync"], check=False)
                rows.append((variant, asyncio.run(
                    one_round(source, size, h.hexdigest(), work, variant))))
                print_row(variant, rows[-1][1], size)
    for variant in variants:
        walls = [r["wall"] for v, r in rows if v == variant]
        med = statistics.median(walls)
        cpu = statistics.median(r["TOTAL"] for v, r in rows if v == variant)
        tail = statistics.median(r["hashed"] - r["sent"] for v, r in rows if v == variant)
        print(f"{variant}: median hash after the last byte sent {tail * 1000:.0f} ms, "
              f"median done {med:.3f}s = "
              f"{size / med / 1e6:,.0f} MB/s, "
              f"median CPU (all threads) {cpu / (size / (1 << 30)):.2f} s/GiB")


def print_row(variant: str, r: dict[str, float], size: int) -> None:
    gib = size / (1 << 30)
    print(f"{variant}: done {r['wall']:.3f}s ({size / r['wall'] / 1e6:,.0f} MB/s), sent "
          f"{r['sent']:.3f}s, hashed {r['hashed']:.3f}s; CPU s/GiB " + ", ".join(
              f"{k} {v / gib:.2f}" for k, v in sorted(r.items())
              if k not in ("wall", "sent", "hashed") and v > 0), flush=True)


if __name__ == "__main__":
    main()
