"""The state of one bench/mirror.py run, and the sets of servers its measurements start."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common import BenchError, log
from harness.data import BlobPool
from harness.procfs import CLK_TCK, RssSampler
from harness.proxies import CountProxy
from harness.servers import Server, docker_registry_server, stablemirror_server
from harness.timing import NoiseGuard, Window

# /proc counts CPU in clock ticks: forgive a few, or sub-second pulls look noisy
TICK_SLACK = 5 / CLK_TCK  # CPU seconds


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    pool: BlobPool
    sampler: RssSampler
    guard: NoiseGuard
    code_src: Path | None = None  # the copy of src/ the servers run (--code), None: live
    data: dict[str, Any] = field(default_factory=dict)
    loads: list[tuple[float, str]] = field(default_factory=list)  # (other load, what)
    errors: list[str] = field(default_factory=list)
    xfer_timeout: float = 300.0

    def sm_server(self, name: str, upstream: str = "") -> Server:
        """stablemirror, hosted (no upstream) or as a mirror of `upstream`."""
        return stablemirror_server(self.work, name, self.args.python, self.args.workers,
                                   upstream=upstream, code_src=self.code_src)

    def upstream_server(self, kind: str, name: str) -> Server:
        """A hosted registry of that kind (stablemirror or docker-registry)."""
        if kind == "stablemirror":
            return self.sm_server(name)
        return docker_registry_server(self.work, name)

    def measure(self, kind: str, what: str, pids: Callable[[], dict[str, int]],
                prepare: Callable[[int], Any], run: Callable[[Any], Any]
                ) -> tuple[Any, Window, bool]:
        """One measurement under the quiet-machine rules; its other load is remembered."""
        value, win, noisy = self.guard.measure(kind, what, pids, prepare, run)
        self.loads.append((win.other, what))
        return value, win, noisy


class ServerSet:
    """Servers and proxies started together and stopped together, whatever happens."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.servers: dict[str, Server] = {}
        self.proxies: dict[str, CountProxy] = {}

    def start(self, srv: Server) -> Server:
        self.servers[srv.name] = srv
        for attempt in range(2):  # one retry: a start can be disturbed from outside
            try:
                srv.start(self.bench.sampler, self.bench.args.startup_timeout)
                return srv
            except BenchError as exc:
                if attempt:
                    raise
                log(f"{srv.name} failed to start ({str(exc).splitlines()[0]}); trying again")
                srv.stop()
                time.sleep(1.0)
        return srv

    def proxy(self, name: str, target_port: int, rate_mbps: float = 0.0) -> CountProxy:
        p = CountProxy(name, target_port, self.bench.work, rate_mbps)
        self.proxies[name] = p
        p.start()
        return p

    def pids(self) -> dict[str, int]:
        out = {n: s.pid for n, s in self.servers.items() if s.alive()}
        out.update({n: p.pid for n, p in self.proxies.items() if p.alive()})
        return out

    def check_alive(self) -> None:
        for n, s in self.servers.items():
            if not s.alive():
                raise BenchError(f"{n} died (exit {s.returncode}):\n{s.log_tail()}")

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()
        for p in self.proxies.values():
            p.stop()
        for n in self.servers:
            self.bench.sampler.forget(n)
            shutil.rmtree(self.bench.work / f"{n}-data", ignore_errors=True)
