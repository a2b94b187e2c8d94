"""bench/footprint.py's measurements: each placement started afresh in every round, timed
from its start until `GET /v2/` answers 200, its idle process-tree memory read, then one
large blob streamed through it with the tree's peak RSS followed."""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common import HOST, REF, BenchError, MiB, log
from harness.data import Blob, make_random_file
from harness.procfs import (
    RssSampler,
    own_cpu_seconds,
    system_busy_seconds,
    tree_cpu_seconds,
    tree_memory_kib,
)
from harness.servers import SM_COMMAND, Server, docker_registry_server, stablemirror_server
from harness.timing import NoiseGuard, settle
from harness.transfers import curl_get, push_monolithic

NODE, CENTER = "node", "center"
PLACEMENTS = (NODE, CENTER, REF)
REPO = "bench/footprint"
NODE_COMMAND = ("{python} -m stablemirror serve --role node --listen {listen} "
                "--data-dir {data_dir} --workers {workers}")


@dataclass
class FootprintRun:
    args: argparse.Namespace
    work: Path
    sampler: RssSampler
    guard: NoiseGuard
    code_src: Path | None = None  # the copy of src/ the servers run (--code)
    code_line: str = "?"  # what that copy is, for the report
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    upstream: Server | None = None  # the node's upstream, a hosted docker-registry
    blob: Blob | None = None

    def workers(self, placement: str) -> int:
        return {NODE: 1, CENTER: self.args.workers}.get(placement, 1)

    def server(self, placement: str, rnd: int) -> Server:
        name = f"{placement}-r{rnd}"
        if placement == REF:
            srv = docker_registry_server(self.work, name)
        else:
            node = placement == NODE
            upstream = f"http://{HOST}:{self.upstream.port}" if node and self.upstream else ""
            srv = stablemirror_server(
                self.work, name, self.args.python, self.workers(placement),
                template=NODE_COMMAND if node else SM_COMMAND,
                upstream=upstream, code_src=self.code_src)
        srv.poll_s = 0.01  # startup_s to 10 ms
        return srv

    def run(self) -> None:
        args = self.args
        self.blob = make_random_file(self.work / "blob.bin", args.size_mib * MiB)
        self.upstream = docker_registry_server(self.work, "upstream")
        try:
            self.upstream.start(None, args.startup_timeout)
            push_monolithic(self.upstream.port, REPO, self.blob, self.xfer_timeout)
            for rnd in range(args.rounds):
                k = rnd % len(PLACEMENTS)
                for placement in PLACEMENTS[k:] + PLACEMENTS[:k]:
                    self.guard.check_deadline()
                    try:
                        self.rounds.setdefault(placement, []).append(self.one(placement, rnd))
                    except (BenchError, OSError) as exc:
                        msg = f"{placement} round {rnd + 1}: {type(exc).__name__}: {exc}"
                        self.errors.append(msg)
                        log(f"FAILED {msg}")
        finally:
            self.upstream.stop()

    @property
    def xfer_timeout(self) -> float:
        return max(120.0, self.args.size_mib * MiB / 2e6)

    def one(self, placement: str, rnd: int) -> dict[str, Any]:
        """Start, idle, stream, stop: one round of one placement."""
        srv = self.server(placement, rnd)
        settle()
        try:
            out = self.start(srv)
            time.sleep(self.args.idle_wait)
            rss, pss, procs = tree_memory_kib(srv.pid)
            out.update(idle_rss_mib=rss / 1024, idle_pss_mib=pss / 1024, procs=procs)
            out.update(self.stream(placement, srv, rss))
            log(f"{srv.name:12s}: /v2/ after {out['startup_s']:.3f} s, idle RSS "
                f"{out['idle_rss_mib']:.1f} MiB ({procs} processes), streaming "
                f"+{out['stream_extra_mib']:.1f} MiB at {out['stream_mbps']:,.0f} MB/s")
            return out
        finally:
            srv.stop()
            self.sampler.forget(srv.name)
            shutil.rmtree(self.work / f"{srv.name}-data", ignore_errors=True)

    def start(self, srv: Server) -> dict[str, Any]:
        """Start the server; the CPU others used meanwhile (its own CPU taken out)."""
        t0, busy0, own0 = time.monotonic(), system_busy_seconds(), own_cpu_seconds()
        srv.start(self.sampler, self.args.startup_timeout)
        wall = time.monotonic() - t0
        other = (system_busy_seconds() - busy0 - (own_cpu_seconds() - own0)
                 - tree_cpu_seconds(srv.pid))
        return {"startup_s": srv.startup_s, "startup_cpu_s": tree_cpu_seconds(srv.pid),
                "startup_other_load": max(other, 0.0) / wall if wall > 0 else 0.0}

    def stream(self, placement: str, srv: Server, idle_kib: int) -> dict[str, Any]:
        """One GET of the large blob with the tree's peak RSS followed: pulled through the
        node from its upstream (cold), from the others after an untimed push."""
        assert self.blob is not None
        blob = self.blob
        if placement != NODE:
            push_monolithic(srv.port, REPO, blob, self.xfer_timeout)
            settle()
        before_kib = tree_memory_kib(srv.pid)[0]

        def get() -> dict[str, float]:
            return curl_get(srv.port, REPO, blob, self.xfer_timeout)

        got, win = self.guard.metered(f"stream-{srv.name}", {srv.name: srv.pid}, get)
        peak = self.sampler.peak_phase_kib.get((srv.name, f"stream-{srv.name}"), 0)
        return {
            "stream_extra_mib": (peak - idle_kib) / 1024,
            "stream_peak_mib": peak / 1024,
            "before_get_mib": before_kib / 1024,
            "stream_mbps": got["mbps"],
            "stream_cpu_s_per_gib": win.cpu.get(srv.name, 0.0) / (blob.size / (1 << 30)),
            "stream_other_load": win.other,
        }
