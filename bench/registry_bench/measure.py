"""The measurements of bench/run.py: each one taken for every server in turn, the order
alternating from one round to the next, `sync` before each, under the harness's
quiet-machine rules (harness.timing.NoiseGuard)."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.common import REF, SM, BenchError, MiB, log
from harness.data import Blob, make_random_file
from harness.nginx import NGINX, nginx_static_server
from harness.procfs import RssSampler
from harness.servers import Server, docker_registry_blob_path
from harness.timing import NoiseGuard, loadavg, wait_for_quiet
from harness.transfers import (
    get_blob_curl,
    push_chunked,
    push_monolithic,
    range_checks,
    verify_blob_get,
)

from registry_bench.manifests import ImageRef, push_image, run_wrk, warm_wrk


@dataclass
class Results:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> server -> v
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    noisy: dict[str, dict[str, int]] = field(default_factory=dict)  # best taken under load
    sample_noisy: dict[str, dict[str, list[bool]]] = field(default_factory=dict)
    discarded: int = 0  # results thrown away because of other load

    def put(self, metric: str, server: str, value: float) -> None:
        self.values.setdefault(metric, {})[server] = value

    def add(self, metric: str, server: str, value: float, noisy: bool) -> None:
        """One round's sample; the reported value is the best of the rounds.  It is flagged
        noisy when the best round was taken while other processes loaded the machine."""
        runs = self.samples.setdefault(metric, {}).setdefault(server, [])
        flags = self.sample_noisy.setdefault(metric, {}).setdefault(server, [])
        runs.append(value)
        flags.append(noisy)
        best = max(range(len(runs)), key=runs.__getitem__)
        self.put(metric, server, runs[best])
        if flags[best]:
            self.noisy.setdefault(metric, {})[server] = 1
        else:
            self.noisy.get(metric, {}).pop(server, None)

    def err(self, metric: str, server: str, msg: str) -> None:
        self.errors.setdefault(metric, {})[server] = msg

    def ratio(self, metric: str, peer: str = REF) -> float | None:
        """stablemirror / `peer` (docker-registry, or nginx for the blob GET)."""
        v = self.values.get(metric, {})
        if v.get(peer) and SM in v:
            return v[SM] / v[peer]
        return None


@dataclass
class Outcome:
    """What one measurement did: work units (bytes or requests) and how to record its
    figures (called with whether the result was taken under other load)."""

    units: float = 0.0
    record: Callable[[bool], None] = field(default=lambda noisy: None)


class ServerGone(BenchError):
    """The server under test is no longer running."""


# fn(server name, server, what prepare returned) -> Outcome
Measurement = Callable[[str, Server, Any], Outcome]
# prepare(server name, attempt) -> what the measurement works on (a fresh blob on a retry)
Preparation = Callable[[str, int], Any]


class RegistryRun:
    def __init__(self, args: argparse.Namespace, work: Path, servers: dict[str, Server]) -> None:
        self.args = args
        self.work = work
        self.servers = servers
        self.order = list(servers)
        self.res = Results()
        self.sampler = RssSampler()
        self.guard = NoiseGuard(args, self.sampler, time.monotonic() + args.deadline)
        self.cpu_s: dict[str, dict[str, float]] = {}  # phase -> server -> CPU s (summed)
        self.units: dict[str, dict[str, float]] = {}  # phase -> server -> bytes or requests
        self.foreign: dict[str, dict[str, list[float]]] = {}  # phase -> server -> [cpu, wall]
        self.res.extra.update(cpu_s=self.cpu_s, units=self.units, foreign=self.foreign)
        self.xfer_timeout = max(120.0, args.size_mib * MiB / 2e6)  # give up below 2 MB/s
        self.images: dict[str, ImageRef] = {}

    def phase(
        self,
        name: str,
        fn: Measurement,
        metric: str | None = None,
        rnd: int = 0,
        timed: bool = True,
        prepare: Preparation | None = None,
    ) -> None:
        """fn for each live server; a failure is recorded against `metric` (if given)."""
        res = self.res
        for sname in self.order if rnd % 2 == 0 else self.order[::-1]:
            srv = self.servers[sname]

            def prep(attempt: int, sname: str = sname, srv: Server = srv) -> Any:
                if not srv.alive():
                    raise ServerGone(f"server not running (exit {srv.returncode})")
                return prepare(sname, attempt) if prepare else None

            def pids(srv: Server = srv) -> dict[str, int]:
                return {srv.name: srv.pid}

            def run(prepared: Any, sname: str = sname, srv: Server = srv) -> Outcome:
                return fn(sname, srv, prepared)

            try:
                outcome, win, noisy = self.guard.measure(
                    name, name, pids, prep, run, timed, label=f"{sname:13s} {name}"
                )
            except ServerGone as exc:
                if metric:
                    res.err(metric, sname, str(exc))
                continue
            except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
                msg = f"{type(exc).__name__}: {exc}"
                log(f"{sname} {name}: FAILED {msg}")
                if metric:
                    res.err(metric, sname, msg)
                continue
            outcome.record(noisy)
            self.cpu_s.setdefault(name, {}).setdefault(sname, 0.0)
            self.cpu_s[name][sname] += win.cpu.get(srv.name, 0.0)
            self.units.setdefault(name, {}).setdefault(sname, 0.0)
            self.units[name][sname] += outcome.units
            if timed:
                self.foreign.setdefault(name, {}).setdefault(sname, [0.0, 0.0])
                self.foreign[name][sname][0] += win.other_cpu
                self.foreign[name][sname][1] += win.wall

    def run(self) -> Results:
        args, res = self.args, self.res
        if args.wait_quiet > 0:
            busy = wait_for_quiet(args.wait_quiet)
            res.extra["busy_before"] = busy
            log(f"other CPU use before the run: {busy:.2f} cores")
        self.guard.deadline = time.monotonic() + args.deadline  # the wait is not counted
        res.extra["load_before"] = loadavg()
        self.sampler.start()
        try:
            self.start_servers()
            self.guard.check_deadline()
            mono, chunked = self.make_blobs()
            if "push" in args.phases:
                for r in range(args.push_rounds):
                    self.push_mono(mono[r], r)
                    self.push_chunked(chunked[r], r)
            elif "get" in args.phases:  # GET still needs one blob on each server
                self.push_mono(mono[0], 0)
            if "get" in args.phases:
                self.blob_gets(mono[0])
            if "manifest" in args.phases:
                self.manifest_gets()
            for sname, srv in self.servers.items():
                if not srv.alive():
                    res.err("peak_rss", sname, f"server died (exit {srv.returncode})")
                    log(f"{sname} is no longer running:\n{srv.log_tail()}")
        finally:
            res.discarded = self.guard.discarded
            res.extra["load_after"] = loadavg()
            self.collect_memory()
        return res

    def start_servers(self) -> None:
        for srv in self.servers.values():
            self.sampler.set_phase("startup")
            srv.start(self.sampler, self.args.startup_timeout)
        self.sampler.set_phase("idle")
        time.sleep(1.0)
        self.sampler.sample()
        peak = self.sampler.peak_tree_kib
        self.res.extra["idle_rss_mib"] = {n: peak.get(n, 0) / 1024 for n in self.servers}
        self.res.extra["startup_s"] = {n: s.startup_s for n, s in self.servers.items()}

    def make_blobs(self) -> tuple[list[Blob], list[Blob]]:
        """Distinct data for every push, so no push ever hits an already-stored blob."""
        args, work = self.args, self.work
        size = args.size_mib * MiB
        n_chunked = args.push_rounds if "push" in args.phases else 0
        n_mono = max(n_chunked, 1 if "get" in args.phases else 0)
        log(f"generating {n_mono + n_chunked} random blobs of {args.size_mib} MiB in {work}")
        t0 = time.perf_counter()
        mono = [make_random_file(work / f"blob-mono-{r}.bin", size) for r in range(n_mono)]
        chunked = [make_random_file(work / f"blob-chunked-{r}.bin", size) for r in range(n_chunked)]
        log(f"test data ready in {time.perf_counter() - t0:.1f}s")
        return mono, chunked

    def fresh(self, blob: Blob) -> Preparation:
        """The round's blob, or on a retry new data the server has never seen."""

        def prepare(sname: str, attempt: int) -> Blob:
            if attempt == 0:
                return blob
            path = self.work / f"{blob.path.stem}-retry{attempt}-{sname}.bin"
            return make_random_file(path, blob.size)

        return prepare

    def push_mono(self, blob: Blob, rnd: int) -> None:
        def do(sname: str, srv: Server, b: Blob) -> Outcome:
            v = push_monolithic(srv.port, "bench/mono", b, self.xfer_timeout)
            log(f"{sname:13s} monolithic push: {v:8.1f} MB/s")
            if b is not blob:
                b.path.unlink()
            return Outcome(b.size, lambda noisy: self.res.add("push_mono", sname, v, noisy))

        self.phase("push_mono", do, "push_mono", rnd, prepare=self.fresh(blob))

    def push_chunked(self, blob: Blob, rnd: int) -> None:
        chunk_mib = self.args.chunk_mib

        def do(sname: str, srv: Server, b: Blob) -> Outcome:
            v = push_chunked(srv.port, "bench/chunked", b, chunk_mib * MiB, self.xfer_timeout)
            log(f"{sname:13s} chunked push:    {v:8.1f} MB/s ({chunk_mib} MiB chunks)")
            if b is not blob:
                b.path.unlink()
            return Outcome(b.size, lambda noisy: self.res.add("push_chunked", sname, v, noisy))

        self.phase("push_chunked", do, "push_chunked", rnd, prepare=self.fresh(blob))

    def blob_gets(self, blob: Blob) -> None:
        res = self.res

        def get(sname: str, srv: Server, _: Any) -> Outcome:
            v = get_blob_curl(srv.port, "bench/mono", blob, self.xfer_timeout)
            log(f"{sname:13s} blob GET:        {v:8.1f} MB/s")
            return Outcome(blob.size, lambda noisy: res.add("blob_get", sname, v, noisy))

        def checks(sname: str, srv: Server, _: Any) -> Outcome:
            content = verify_blob_get(srv.port, "bench/mono", blob, self.xfer_timeout)
            res.notes.setdefault("content", {})[sname] = content
            rng = range_checks(srv.port, "bench/mono", blob)
            res.notes.setdefault("range", {})[sname] = rng
            log(f"{sname:13s} full GET digest check: {content}; Range GET check: {rng}")
            return Outcome()

        nginx = self.start_nginx(blob) if self.args.nginx else None
        try:
            for r in range(self.args.get_rounds):
                self.phase("blob_get", get, "blob_get", r)
            self.phase("blob_checks", checks, "blob_get", timed=False)
        finally:
            if nginx:  # it serves blob GETs only: the later phases do not see it
                self.drop_nginx(nginx)

    def drop_nginx(self, srv: Server) -> None:
        srv.stop()
        self.sampler.forget(NGINX)
        del self.servers[NGINX]
        self.order.remove(NGINX)

    def start_nginx(self, blob: Blob) -> Server | None:
        """nginx serving the blob's file on disk by sendfile (the physical limit of a blob
        GET): docker-registry's copy when it runs, else the test blob itself (same bytes).
        It takes its turn in the GET rounds beside the registries; None if it fails."""
        on_ref = REF in self.servers
        file = docker_registry_blob_path(self.work, REF, blob.digest) if on_ref else blob.path
        srv = nginx_static_server(self.work, NGINX, f"/v2/bench/mono/blobs/{blob.digest}",
                                  file, self.args.workers)
        self.servers[NGINX] = srv  # before start: run.py stops it, whatever happens
        self.order.append(NGINX)
        self.res.extra["nginx_file"] = "docker-registry's blob file" if on_ref else "the test blob"
        try:
            srv.start(self.sampler, self.args.startup_timeout)
        except BenchError as exc:
            log(f"nginx: FAILED {exc}")
            self.res.err("blob_get", NGINX, str(exc))
            self.drop_nginx(srv)
            return None
        return srv

    def manifest_path(self, sname: str, kind: str) -> str:
        if sname not in self.images:
            raise BenchError("no image was pushed")
        img = self.images[sname]
        return f"/v2/{img.repo}/manifests/{img.tag if kind == 'tag' else img.digest}"

    def manifest_gets(self) -> None:
        args, res = self.args, self.res

        def push(sname: str, srv: Server, _: Any) -> Outcome:
            self.images[sname] = push_image(srv.port, "bench/manifest", "v1", os.urandom(8))
            return Outcome()

        def warmup(sname: str, srv: Server, _: Any) -> Outcome:
            for kind in ("tag", "digest"):
                path = self.manifest_path(sname, kind)
                warm_wrk(srv.port, path, args.wrk_threads, args.wrk_conns, args.wrk_warmup)
            return Outcome()

        def wrk_by(kind: str) -> Measurement:
            def do(sname: str, srv: Server, _: Any) -> Outcome:
                path = self.manifest_path(sname, kind)
                out = run_wrk(srv.port, path, args.wrk_threads, args.wrk_conns, args.wrk_duration)
                lat = out["latency_ms"]
                log(
                    f"{sname:13s} manifest GET by {kind:6s}: {out['rps']:9.0f} req/s "
                    f"(p50 {lat.get('p50', 0):.2f} ms, p99 {lat.get('p99', 0):.2f} ms)"
                )

                def record(noisy: bool) -> None:
                    res.add(f"manifest_{kind}", sname, out["rps"], noisy)
                    res.extra.setdefault("wrk", {}).setdefault(kind, {}).setdefault(sname, [])
                    res.extra["wrk"][kind][sname].append(out)

                return Outcome(int(out["requests"]), record)

            return do

        self.phase("manifest_push", push, "manifest_tag", timed=False)
        if args.wrk_warmup > 0:
            self.phase("wrk_warmup", warmup, timed=False)
        for r in range(args.wrk_rounds):
            self.phase("manifest_tag", wrk_by("tag"), "manifest_tag", r)
            self.phase("manifest_digest", wrk_by("digest"), "manifest_digest", r)

    def collect_memory(self) -> None:
        """Peak RSS per server (the table) and the details' memory figures."""
        sampler, res, names = self.sampler, self.res, list(self.servers)
        sampler.stop()
        for sname in names:
            if sname in sampler.peak_tree_kib:
                res.put("peak_rss", sname, sampler.peak_tree_kib[sname] / 1024)
        res.extra["hwm_sum_mib"] = {n: sampler.hwm_sum_kib(n) / 1024 for n in names}
        res.extra["max_procs"] = dict(sampler.max_procs)
        res.extra["peak_pss_mib"] = {n: kib / 1024 for n, kib in sampler.peak_pss_kib.items()}
        res.extra["phase_rss_mib"] = {
            f"{n}/{p}": kib / 1024 for (n, p), kib in sorted(sampler.peak_phase_kib.items())
        }
