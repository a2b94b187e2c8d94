#!/usr/bin/env python3
"""A byte-counting TCP proxy for bench/mirror.py (loopback only).

    python bench/countproxy.py --target 127.0.0.1:5000 [--port 0] [--rate MB_PER_S]

Listens on 127.0.0.1, forwards every connection to the target and counts the bytes each way.
The target->client direction (the bulk: blob bodies) moves with splice(2) through a pipe, so
the bytes never enter Python and the proxy costs a small fraction of a core even at GB/s.
The client->target direction (requests) is read normally, and each request's first line and
`Range` header are remembered, so the harness can tell how many blob GETs reached the target.
With `--rate`, target->client bytes are paced per connection (a stand-in for a slower link);
with `--shared` as well, all connections share that rate (one link, as parallel Range GETs
would share it).

Protocol on stdin/stdout, one line each way:
    (on start)      -> "port N"
    "stats"         -> a JSON object: down (target->client bytes), up, connections, active,
                       requests ([method, path, range] of every request seen, up to 10000)
    "reset"         -> "ok" (counters and the request list are zeroed)
    "rate N"        -> "ok" (pace to N MB/s from now on; 0: no limit)
    "quit" or EOF   -> the process exits
A connection is one thread per direction; the process is a daemon of the harness, which
stops it (process group) at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import socket
import sys
import threading
import time

PIPE_SIZE = 1 << 20
SPLICE_MAX = 1 << 20
MAX_REQUESTS = 10_000
MAX_HEAD = 64 * 1024


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = 0
        self.up = 0
        self.connections = 0
        self.active = 0
        self.requests: list[list[str]] = []

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "down": self.down,
                "up": self.up,
                "connections": self.connections,
                "active": self.active,
                "requests": list(self.requests),
            }

    def reset(self) -> None:
        with self.lock:
            self.down = self.up = self.connections = 0
            self.requests = []


class RequestSniffer:
    """Finds request heads in the client->target byte stream (bodies skipped by length)."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buf = bytearray()
        self.skip = 0
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        if self.skip:
            n = min(self.skip, len(data))
            self.skip -= n
            data = data[n:]
        self.buf += data
        for _ in range(1000):  # bounded: a few requests per read at most
            if self.skip or b"\r\n\r\n" not in self.buf:
                break
            head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            rng, length = "", 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "range":
                    rng = value.strip()
                elif name.strip().lower() == "content-length":
                    with contextlib.suppress(ValueError):
                        length = int(value.strip())
            with self.counters.lock:
                if len(self.counters.requests) < MAX_REQUESTS:
                    self.counters.requests.append(
                        [parts[0], parts[1] if len(parts) > 1 else "", rng])
            n = min(length, len(rest))
            self.skip = length - n
            self.buf = bytearray(rest[n:])
        if len(self.buf) > MAX_HEAD:  # not HTTP as we know it: stop looking
            self.broken = True
            self.buf.clear()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


class Link:
    """One shared pacer (`--shared`): every connection's bytes queue for the same link."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.free_at = time.monotonic()

    def pace(self, n: int) -> None:
        with self.lock:
            rate = self.rate
            if not rate:
                return
            now = time.monotonic()
            self.free_at = max(now, self.free_at) + n / rate
            wait = self.free_at - now - 0.01  # 10 ms of burst, like the per-connection bucket
        if wait > 0:
            time.sleep(wait)


def _pump_down(src: socket.socket, dst: socket.socket, counters: Counters,
               rate: float = 0.0, link: Link | None = None) -> None:
    """target -> client with splice(2): socket -> pipe -> socket; paced to `rate` bytes/s
    per connection when given (a link of that speed, roughly)."""
    r, w = os.pipe()
    if link is not None:
        rate = 0.0  # paced by the shared link instead
    step = 65536 if link is not None else (
        min(SPLICE_MAX, max(16384, int(rate / 1000))) if rate else SPLICE_MAX)
    burst = max(step, rate * 0.01)  # token bucket: idle time earns at most 10 ms of credit
    allowance, last = burst, time.monotonic()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        while True:
            n = os.splice(src.fileno(), w, step)
            if n == 0:
                break
            if link is not None:
                link.pace(n)
            elif rate:
                now = time.monotonic()
                allowance = min(burst, allowance + (now - last) * rate) - n
                last = now
                if allowance < 0:
                    time.sleep(-allowance / rate)
            left = n
            while left:
                m = os.splice(r, dst.fileno(), left)
                if m == 0:
                    raise OSError("client closed")
                left -= m
            with counters.lock:
                counters.down += n
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
    finally:
        os.close(r)
        os.close(w)


def _pump_up(src: socket.socket, dst: socket.socket, counters: Counters) -> None:
    sniffer = RequestSniffer(counters)
    while True:
        data = src.recv(256 * 1024)
        if not data:
            break
        sniffer.feed(data)
        dst.sendall(data)
        with counters.lock:
            counters.up += len(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _handle(client: socket.socket, target: tuple[str, int], counters: Counters,
            rate: float, link: Link | None = None) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        _close(client)
        return
    upstream.settimeout(None)
    client.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with counters.lock:
        counters.connections += 1
        counters.active += 1
    done = threading.Event()
    left = [2]
    lock = threading.Lock()

    def run(fn: object, a: socket.socket, b: socket.socket) -> None:
        try:
            fn(a, b, counters)  # type: ignore[operator]
        except OSError:
            _close(client, upstream)  # one side broke: so does the other
        finally:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

    t = threading.Thread(target=run, args=(_pump_up, client, upstream), daemon=True)
    t.start()
    run(functools.partial(_pump_down, rate=rate, link=link), upstream, client)
    done.wait()
    _close(client, upstream)
    with counters.lock:
        counters.active -= 1


def serve(listener: socket.socket, target: tuple[str, int], counters: Counters,
          rate: float = 0.0, link: Link | None = None) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_handle, args=(client, target, counters, rate, link),
                         daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="pace target->client bytes to this many MB/s per connection (0: no limit)")
    p.add_argument("--shared", action="store_true",
                   help="one link: all connections share --rate (and the `rate` command)")
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    host = host.removeprefix("http://") or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        p.error("loopback targets only")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(512)
    counters = Counters()
    link = Link(args.rate * 1e6) if args.shared else None
    threading.Thread(target=serve, args=(listener, ("127.0.0.1", int(port)), counters,
                                         args.rate * 1e6, link), daemon=True).start()
    print(f"port {listener.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            print(json.dumps(counters.snapshot()), flush=True)
        elif cmd == "reset":
            counters.reset()
            print("ok", flush=True)
        elif cmd.startswith("rate ") and link is not None:
            with link.lock:
                link.rate = float(cmd.split()[1]) * 1e6
                link.free_at = time.monotonic()
            print("ok", flush=True)
        elif cmd == "quit":
            break
        else:
            print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
