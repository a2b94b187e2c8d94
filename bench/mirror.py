#!/usr/bin/env python3
"""Mirror benchmarks (issue 3, "Speed"): stablemirror as a pull-through mirror, side by side.

Run from the repository root:

    .venv/bin/python bench/mirror.py --quick   # 256 MiB blobs, 2 cold rounds, 8 clients
    .venv/bin/python bench/mirror.py           # 1 GiB blobs, 3 cold rounds, 8 and 32 clients

Three measurements, every server on 127.0.0.1 with throw-away storage in one temp dir:

1. cold: a never-seen blob pulled through `stablemirror serve --upstream U` vs. directly
   from U, for U = a stablemirror hosted registry and U = Debian's docker-registry
   (curl: total time and time to first byte);
2. warm: the same blob once cached, stablemirror mirror vs. docker-registry in proxy mode;
3. concurrent cold: N clients pulling one never-seen blob at once through each mirror, with
   a byte-counting proxy (bench/countproxy.py) between each mirror and the upstream.

Helpers (servers, pushes, quiet-machine handling) come from bench/run.py; its behaviour and
CLI are unchanged. Writes its own sections of bench/RESULTS.md (mirror-full / mirror-quick).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from run import (  # noqa: E402  (bench/ is put on sys.path just above)
    HOST,
    REPO_ROOT,
    BenchError,
    Blob,
    MiB,
    RssSampler,
    Server,
    add_output_args,
    command_line,
    expect,
    free_port,
    get_blob_curl,
    http,
    loadavg,
    location_target,
    log,
    machine_info,
    make_random_file,
    own_cpu_seconds,
    push_monolithic,
    settle,
    system_busy_seconds,
    tools_present,
    tree_cpu_seconds,
    update_results_file,
    verify_blob_get,
    wait_for_quiet,
    with_digest,
)

RESULTS_MD = BENCH_DIR / "RESULTS.md"
COUNTPROXY = BENCH_DIR / "countproxy.py"
SM = "stablemirror"
REF = "reference"
KIND_LABEL = {SM: "stablemirror (hosted)", REF: "docker-registry"}
MIRROR_LABEL = {SM: "stablemirror mirror", REF: "docker-registry proxy"}


def cold_label(key: str) -> str:
    """'stablemirror' -> 'stablemirror (hosted)'; 'stablemirror@125' -> '... over 125 MB/s'."""
    kind, _, link = key.partition("@")
    return KIND_LABEL[kind] + (f", {link} MB/s link" if link else "")
REPO = "bench/mirror"

COLD_TIME_TARGET = 1.10  # mirror total time / direct total time, at most
TTFB_TARGET_MS = 50.0  # mirror TTFB - direct TTFB, at most
WARM_TARGET = 1.0  # stablemirror MB/s / docker-registry proxy MB/s, at least
TICK_SLACK = 5 / os.sysconf("SC_CLK_TCK")  # CPU seconds
UPSTREAM_ONCE_SLACK = 1.01  # upstream bytes / blob size for "fetched once" (headers, a HEAD)


# --------------------------------------------------------------------------------------
# Servers and the counting proxy
# --------------------------------------------------------------------------------------


def sm_server(work: Path, name: str, python: str, workers: int, upstream: str = "") -> Server:
    """stablemirror, hosted (no upstream) or as a mirror of `upstream`."""
    port = free_port()
    data = work / f"{name}-data"
    data.mkdir()
    argv = [python, "-m", "stablemirror", "serve", "--listen", f"{HOST}:{port}",
            "--data-dir", str(data), "--workers", str(workers)]
    if upstream:
        argv += ["--upstream", upstream]
    env = dict(os.environ)
    env["STABLEMIRROR_LOG_LEVEL"] = "error"  # as run.py's quiet mode: no access log
    if CODE_SRC:  # a snapshot of src/ (see --code): ahead of the editable install's path
        env["PYTHONPATH"] = os.pathsep.join(
            [str(CODE_SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return Server(name, port, argv, work / f"{name}.log", env=env)


CODE_SRC: Path | None = None  # set by main() from --code


def git(*argv: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), *argv], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else ""


def snapshot_code(mode: str, work: Path) -> tuple[Path | None, str]:
    """The stablemirror source the servers will run, and a line saying what it is."""
    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src").splitlines()]
    diff_id = hashlib.sha256(git("diff", "HEAD", "--", "src").encode()).hexdigest()[:12]
    changes = (f"plus uncommitted changes to {len(dirty)} path(s) under src/ "
               f"({', '.join(x.removeprefix('src/stablemirror/') for x in dirty[:8])}"
               f"{', ...' if len(dirty) > 8 else ''}; `git diff HEAD -- src` sha256 "
               f"{diff_id})" if dirty else "(src/ clean)")
    if mode == "live":
        return None, f"`src/` as found on disk when each server started: git {head} {changes}"
    dest = work / "code"
    if mode == "HEAD":
        dest.mkdir()
        with subprocess.Popen(["git", "-C", str(REPO_ROOT), "archive", "HEAD", "src"],
                              stdout=subprocess.PIPE) as arch:
            subprocess.run(["tar", "-x", "-C", str(dest)], stdin=arch.stdout, check=True,
                           timeout=120)
        if arch.wait(timeout=60) != 0:
            raise BenchError("git archive HEAD src failed")
        return dest / "src", f"git {head}, committed `src/` (git archive HEAD)"
    shutil.copytree(REPO_ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest / "src", f"git {head} {changes}, copied at the start of the run"


def ref_server(work: Path, name: str, proxy: str = "") -> Server:
    """docker-registry, hosted or (with `proxy`) a pull-through cache of that URL."""
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    port = free_port()
    root = work / f"{name}-data"
    root.mkdir()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{HOST}:{port}", "secret": os.urandom(16).hex()},
    }
    if proxy:
        config["proxy"] = {"remoteurl": proxy}
    path = work / f"{name}-config.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return Server(name, port, [exe, "serve", str(path)], work / f"{name}.log")


def ref_blob_path(work: Path, name: str, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return (work / f"{name}-data" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd
            / "data")


class CountProxy:
    """bench/countproxy.py in its own process group, driven over stdin/stdout."""

    def __init__(self, name: str, target_port: int, work: Path, rate_mbps: float = 0.0
                 ) -> None:
        self.name = name
        self.target_port = target_port
        self.rate_mbps = rate_mbps
        self.log_path = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._buf = b""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, str(COUNTPROXY), "--target", f"{HOST}:{self.target_port}",
                 "--rate", str(self.rate_mbps)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                start_new_session=True)
        line = self._readline(10)
        if not line.startswith("port "):
            raise BenchError(f"{self.name}: unexpected first line {line!r}")
        self.port = int(line.split()[1])
        log(f"{self.name} on :{self.port} -> :{self.target_port}"
            + (f" (paced to {self.rate_mbps:g} MB/s per connection)" if self.rate_mbps else ""))

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise BenchError(f"{self.name}: no answer within {timeout}s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise BenchError(f"{self.name}: proxy exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def _ask(self, cmd: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self._readline(10)

    def stats(self) -> dict[str, Any]:
        return json.loads(self._ask("stats"))  # type: ignore[no-any-return]

    def reset(self) -> None:
        if self._ask("reset") != "ok":
            raise BenchError(f"{self.name}: reset failed")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def blob_gets(stats: dict[str, Any], digest: str) -> list[list[str]]:
    return [r for r in stats.get("requests", []) if r[0] == "GET" and r[1].endswith(digest)]


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------


def blob_url(port: int, digest: str) -> str:
    return f"http://{HOST}:{port}/v2/{REPO}/blobs/{digest}"


def curl_pull(port: int, blob: Blob, timeout: float) -> dict[str, float]:
    """One timed GET with curl to /dev/null: TTFB, total time, bytes (checked)."""
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(int(timeout)), "-w",
            "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
            blob_url(port, blob.digest)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    parts = proc.stdout.split()
    if proc.returncode != 0 or len(parts) != 4:
        raise BenchError(f"curl GET failed ({proc.returncode}): {proc.stderr.strip()}")
    code, ttfb, total, size = int(parts[0]), float(parts[1]), float(parts[2]), int(parts[3])
    if code != 200 or size != blob.size:
        raise BenchError(f"blob GET: HTTP {code}, {size} bytes (wanted 200, {blob.size})")
    return {"ttfb": ttfb, "total": total, "bytes": size, "mbps": size / total / 1e6}


def hashed_pull(port: int, blob: Blob, start: threading.Barrier, timeout: float
                ) -> dict[str, Any]:
    """One GET on a raw socket, hashed as it arrives (recv_into and sha256 release the GIL,
    so N of these in threads are about as cheap as N curls to /dev/null plus the hashing)."""
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
            h = hashlib.sha256()
            h.update(rest)
            got = len(rest)
            while got < length:
                n = sock.recv_into(buf, min(len(buf), length - got))
                if n == 0:
                    break
                h.update(mv[:n])
                got += n
                if time.perf_counter() > deadline:
                    raise BenchError(f"gave up after {timeout:.0f}s")
            out["bytes"] = got
            out["t1"] = time.perf_counter()
            out["total"] = out["t1"] - t0
            if got != blob.size:
                raise BenchError(f"{got} bytes of {blob.size}")
            if "sha256:" + h.hexdigest() != blob.digest:
                raise BenchError("wrong sha256")
            out["ok"] = True
    except (OSError, BenchError, ValueError, IndexError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        if out["t1"] is None:
            out["t1"] = time.perf_counter()
    return out


def concurrent_pulls(port: int, blob: Blob, n: int, timeout: float) -> dict[str, Any]:
    barrier = threading.Barrier(n)
    results: list[dict[str, Any]] = [{} for _ in range(n)]

    def client(i: int) -> None:
        results[i] = hashed_pull(port, blob, barrier, timeout)

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


# --------------------------------------------------------------------------------------
# Test data: a pool of random files.  A server set never sees the same blob twice; different
# server sets (separate storage) reuse the files, so only a handful are ever generated.
# --------------------------------------------------------------------------------------


class BlobPool:
    MAX_FILES = 24

    def __init__(self, work: Path, size: int) -> None:
        self.work = work
        self.size = size
        self.files: list[Blob] = []
        self.used: dict[str, int] = {}

    def take(self, owner: str) -> Blob:
        i = self.used.get(owner, 0)
        self.used[owner] = i + 1
        if i >= self.MAX_FILES:
            raise BenchError(f"more than {self.MAX_FILES} fresh blobs needed for {owner}")
        while len(self.files) <= i:
            t0 = time.perf_counter()
            path = self.work / f"blob-{len(self.files)}.bin"
            self.files.append(make_random_file(path, self.size))
            log(f"generated {path.name} ({self.size // MiB} MiB) in "
                f"{time.perf_counter() - t0:.1f}s")
        return self.files[i]

    def remove(self) -> None:
        for b in self.files:
            b.path.unlink(missing_ok=True)


def push_small(port: int, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = expect(http(port, "POST", f"/v2/{REPO}/blobs/uploads/"), (202,), "POST upload")
    target = with_digest(location_target(resp, port, "POST upload"), digest)
    resp = http(port, "PUT", target, headers={"Content-Type": "application/octet-stream"},
                body=data)
    expect(resp, (201,), "PUT small blob")
    return digest


def warm_up(upstream_port: int, ports: list[int]) -> None:
    """Small never-seen blobs through every server, so that connection pools, lazy imports
    and each worker's first upstream contact are not billed to the first timed pull."""
    for _ in range(4):
        data = os.urandom(256 * 1024)
        digest = push_small(upstream_port, data)
        for port in ports:
            resp = expect(http(port, "GET", f"/v2/{REPO}/blobs/{digest}", timeout=30), (200,),
                          "warm-up GET")
            if resp.body != data:
                raise BenchError("warm-up GET returned different bytes")


# --------------------------------------------------------------------------------------
# Measuring with quiet-machine accounting (as in run.py): CPU used by everything except the
# servers under test and this harness (with its curl children) is "other load"; a result
# taken under more than --max-other-load cores is thrown away and measured again.
# --------------------------------------------------------------------------------------


@dataclass
class Window:
    wall: float
    other: float  # cores, averaged over the window
    cpu: dict[str, float]  # CPU seconds per server (whole process tree)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    pool: BlobPool
    sampler: RssSampler
    deadline: float
    data: dict[str, Any] = field(default_factory=dict)
    discarded: int = 0
    loads: list[tuple[float, str]] = field(default_factory=list)
    retry_spent: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    xfer_timeout: float = 300.0

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise BenchError(f"run deadline of {self.args.deadline}s exceeded")

    def metered(self, what: str, pids: dict[str, int], fn: Callable[[], Any]
                ) -> tuple[Any, Window]:
        c0 = {n: tree_cpu_seconds(p) for n, p in pids.items()}
        t0, sys0, own0 = time.monotonic(), system_busy_seconds(), own_cpu_seconds()
        self.sampler.set_phase(what)
        try:
            value = fn()
        finally:
            self.sampler.set_phase("idle")
        wall = time.monotonic() - t0
        cpu = {n: tree_cpu_seconds(p) - c0[n] for n, p in pids.items()}
        other = system_busy_seconds() - sys0 - (own_cpu_seconds() - own0) - sum(cpu.values())
        # /proc counts CPU in clock ticks: forgive a few, or sub-second pulls look noisy
        other -= TICK_SLACK
        return value, Window(wall, max(other, 0.0) / wall if wall > 0 else 0.0, cpu)

    def measure(self, kind: str, what: str, pids: dict[str, int],
                prepare: Callable[[int], Any], run: Callable[[Any], Any]
                ) -> tuple[Any, Window, bool]:
        """prepare(attempt) (untimed, e.g. push a fresh blob), settle, then run(prepared)
        metered; repeated while other processes loaded the machine (bounded)."""
        args = self.args
        for attempt in range(args.noisy_retries + 1):
            self.check_deadline()
            prepared = prepare(attempt)
            settle()
            t0 = time.monotonic()
            value, win = self.metered(what, pids, functools.partial(run, prepared))
            noisy = win.other > args.max_other_load
            budget_left = args.retry_budget - self.retry_spent.get(kind, 0.0)
            if noisy and attempt < args.noisy_retries and budget_left > 0:
                log(f"{what}: other processes used {win.other:.2f} cores; "
                    "discarding this result and measuring again")
                self.discarded += 1
                wait_for_quiet(min(20.0, budget_left), args.max_other_load)
                self.retry_spent[kind] = (self.retry_spent.get(kind, 0.0)
                                          + time.monotonic() - t0)
                continue
            self.loads.append((win.other, what))
            return value, win, noisy
        raise AssertionError("unreachable")


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
        with self.bench.sampler._lock:
            for n in self.servers:
                self.bench.sampler.roots.pop(n, None)
        for n in self.servers:
            shutil.rmtree(self.bench.work / f"{n}-data", ignore_errors=True)


# --------------------------------------------------------------------------------------
# The three measurements
# --------------------------------------------------------------------------------------


def run_cold(b: Bench, kind: str, link: float = 0.0) -> None:
    """Cold pull of a never-seen blob: through a stablemirror mirror vs. directly from the
    upstream (`kind` names the upstream).  A round pushes one fresh blob and pulls it both
    ways (order alternating); a repeated mirror pull gets a new blob of its own.  With `link`
    (MB/s), both the direct pull and the mirror's upstream fetch pass one pacing proxy."""
    args = b.args
    key = f"{kind}@{link:g}" if link else kind
    owner = f"cold-{key}"
    out: dict[str, Any] = {"direct": [], "mirror": [], "noisy": {"direct": [], "mirror": []}}
    b.data.setdefault("cold", {})[key] = out
    ss = ServerSet(b)
    try:
        tag = f"-{link:g}" if link else ""
        up_name = f"{kind}-upstream{tag}"
        up = ss.start(sm_server(b.work, up_name, args.python, args.workers) if kind == SM
                      else ref_server(b.work, up_name))
        pacer = ss.proxy(f"link{tag}", up.port, link) if link else None
        up_port = pacer.port if pacer else up.port  # where pulls of the upstream go
        mirror = ss.start(sm_server(b.work, f"sm-mirror-of-{kind}{tag}", args.python,
                                    args.workers, upstream=f"http://{HOST}:{up_port}"))
        warm_up(up.port, [up_port, mirror.port])
        cpu_sum: dict[str, dict[str, float]] = {"direct": {}, "mirror": {}}

        for r in range(args.cold_rounds):
            blob0 = b.pool.take(owner)
            push_monolithic(up.port, REPO, blob0, b.xfer_timeout)
            order = ["direct", "mirror"] if r % 2 == 0 else ["mirror", "direct"]
            for via in order:
                port = up_port if via == "direct" else mirror.port

                def prep(attempt: int, via: str = via, blob0: Blob = blob0) -> Blob:
                    if via == "direct" or attempt == 0:
                        return blob0  # the direct pull never touches the mirror
                    blob = b.pool.take(owner)  # a repeat: the mirror has seen blob0
                    push_monolithic(up.port, REPO, blob, b.xfer_timeout)
                    return blob

                def pull(blob: Blob, port: int = port) -> dict[str, float]:
                    return curl_pull(port, blob, b.xfer_timeout)

                row, win, noisy = b.measure(f"cold-{via}", f"cold {key} {via}", ss.pids(),
                                            prep, pull)
                row["round"] = r
                row["other_load"] = win.other
                row["cpu"] = win.cpu
                out[via].append(row)
                out["noisy"][via].append(noisy)
                for n, c in win.cpu.items():
                    cpu_sum[via][n] = cpu_sum[via].get(n, 0.0) + c
                log(f"cold {cold_label(key):22s} {via:6s}: {row['total']:.3f}s "
                    f"({row['mbps']:7.1f} MB/s), TTFB {row['ttfb'] * 1000:6.1f} ms"
                    + (" (noisy)" if noisy else ""))
            ss.check_alive()
        out["cpu_s"] = cpu_sum
        # correctness: a full hashed GET of a fresh blob, direct and (cold) through the mirror
        blob = b.pool.take(owner)
        push_monolithic(up.port, REPO, blob, b.xfer_timeout)
        out["verify"] = {
            "direct": verify_blob_get(up_port, REPO, blob, b.xfer_timeout),
            "mirror (cold)": verify_blob_get(mirror.port, REPO, blob, b.xfer_timeout),
            "mirror (cached)": verify_blob_get(mirror.port, REPO, blob, b.xfer_timeout),
        }
        log(f"cold {cold_label(key)}: sha256 checks {out['verify']}")
        if args.profile:
            out["profile"] = profile_cold(b, key, up, mirror, owner)
        ss.check_alive()
    finally:
        ss.stop()


def profile_cold(b: Bench, kind: str, up: Server, mirror: Server, owner: str) -> dict[str, Any]:
    """One extra (untimed) cold pull through the mirror under py-spy; raw collapsed stacks."""
    prof_dir = Path(b.args.profile)
    prof_dir.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy", path=str(Path(b.args.python).parent)) or shutil.which("py-spy")
    if not spy:
        return {"error": "py-spy not found"}
    blob = b.pool.take(owner)
    push_monolithic(up.port, REPO, blob, b.xfer_timeout)
    settle()
    out_path = prof_dir / f"cold-mirror-of-{kind}.txt"
    argv = [spy, "record", "--pid", str(mirror.pid), "--subprocesses", "--nonblocking",
            "--threads", "--rate", str(b.args.profile_rate), "--format", "raw", "-o",
            str(out_path), "--duration", str(int(b.xfer_timeout))]
    if b.args.profile_idle:
        argv.append("--idle")
    spy_log = (b.work / f"py-spy-{kind}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=spy_log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        time.sleep(2.0)  # py-spy attaches to every worker
        row = curl_pull(mirror.port, blob, b.xfer_timeout)
        time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        spy_log.close()
    summary = summarize_profile(out_path)
    summary_path = out_path.with_suffix(".summary.txt")
    summary_path.write_text("\n".join(summary) + "\n")
    log(f"profiled cold pull via mirror of {kind}: {row['total']:.3f}s -> {out_path}\n  "
        + "\n  ".join(summary[:12]))
    return {"file": str(out_path), "summary": str(summary_path), "total": row["total"],
            "ttfb": row["ttfb"], "top": summary[:8]}


def summarize_profile(path: Path, top: int = 25) -> list[str]:
    """Samples per thread, and the hottest frames (self and inclusive), of py-spy raw output.
    A C builtin (os.pread, os.fsync, socket I/O inside uvloop) shows as its Python caller."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), path.open() as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [x for x in stack.split(";") if not x.startswith("process ")]
            thread = frames[0] if frames and frames[0].startswith("thread ") else "?"
            frames = [x for x in frames if not x.startswith("thread ")]
            threads[thread] = threads.get(thread, 0) + n
            if frames:
                self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
            for fr in {x.rsplit(":", 1)[0] + ")" if ":" in x else x for x in frames}:
                incl[fr] = incl.get(fr, 0) + n
    if not total:
        return ["no samples"]

    def pct(v: int) -> str:
        return f"{v:6d} {100 * v / total:5.1f}%"

    out = [f"{total} samples (CPU only unless --profile-idle); per thread:"]
    out += [f"  {pct(v)} {k}" for k, v in sorted(threads.items(), key=lambda x: -x[1])[:10]]
    out.append("hottest frames (self):")
    out += [f"  {pct(v)} {k}" for k, v in sorted(self_n.items(), key=lambda x: -x[1])[:top]]
    out.append("stablemirror frames (inclusive):")
    out += [f"  {pct(v)} {k}" for k, v in sorted(incl.items(), key=lambda x: -x[1])
            if "stablemirror/" in k and "__main__" not in k and "cli.py" not in k][:top]
    return out


def run_proxy_phases(b: Bench) -> None:
    """Warm pulls and concurrent cold pulls: a stablemirror mirror and docker-registry in
    proxy mode, each behind its own counting proxy, in front of one upstream."""
    args = b.args
    kind = args.proxy_upstream
    ss = ServerSet(b)
    b.data["proxy_upstream"] = kind
    try:
        up = ss.start(sm_server(b.work, "proxied-upstream", args.python, args.workers)
                      if kind == SM else ref_server(b.work, "proxied-upstream"))
        counters = {SM: ss.proxy("count-sm", up.port), REF: ss.proxy("count-ref", up.port)}
        mirrors = {
            SM: ss.start(sm_server(b.work, "sm-mirror", args.python, args.workers,
                                   upstream=counters[SM].url)),
            REF: ss.start(ref_server(b.work, "ref-proxy", proxy=counters[REF].url)),
        }
        warm_up(up.port, [mirrors[SM].port, mirrors[REF].port])
        order = [SM, REF]
        conc: dict[str, Any] = b.data.setdefault("concurrent", {})

        def cold_concurrent(n: int, blob: Blob, rnd: int) -> None:
            row: dict[str, Any] = {}
            conc[str(n)] = row
            for name in order if rnd % 2 == 0 else order[::-1]:
                def prep(attempt: int, name: str = name) -> Blob:
                    if attempt == 0:
                        counters[name].reset()
                        return blob
                    # a repeat: this mirror has seen `blob`; let a background fetch of the
                    # discarded attempt finish before counting again
                    settle_counter(counters[name], quiet_s=2.0, limit_s=b.xfer_timeout)
                    fresh = b.pool.take("proxied")
                    push_monolithic(up.port, REPO, fresh, b.xfer_timeout)
                    counters[name].reset()
                    return fresh

                def go(bl: Blob, name: str = name) -> dict[str, Any]:
                    res = concurrent_pulls(mirrors[name].port, bl, n, b.xfer_timeout)
                    res["blob"] = bl
                    return res

                res, win, noisy = b.measure(f"concurrent-{n}", f"{n} clients via {name}",
                                            ss.pids(), prep, go)
                bl = res.pop("blob")
                # docker-registry keeps fetching in the background (its local copy):
                # wait for the upstream bytes to stop moving before reading them
                st = settle_counter(counters[name], quiet_s=2.0, limit_s=b.xfer_timeout)
                gets = blob_gets(st, bl.digest)
                res.update({
                    "upstream_bytes": st["down"],
                    "upstream_ratio": st["down"] / bl.size,
                    "upstream_blob_gets": len(gets),
                    "upstream_ranges": sorted({g[2] for g in gets if g[2]}),
                    "upstream_requests": len(st["requests"]),
                    "other_load": win.other,
                    "noisy": noisy,
                    "mirror_cpu": win.cpu.get(mirrors[name].name, 0.0),
                    "upstream_cpu": win.cpu.get(up.name, 0.0),
                    "proxy_cpu": win.cpu.get(counters[name].name, 0.0),
                })
                row[name] = res
                log(f"{n:3d} clients via {MIRROR_LABEL[name]:22s}: wall {res['wall']:.2f}s, "
                    f"{res['ok']}/{n} correct, upstream sent {res['upstream_ratio']:.2f}x "
                    f"the blob in {len(gets)} blob GETs" + (" (noisy)" if noisy else "")
                    + (f"; errors: {res['errors']}" if res["errors"] else ""))
            ss.check_alive()

        # 1 client: the cold pull that caches the blob for the warm phase
        warm_blob = b.pool.take("proxied")
        push_monolithic(up.port, REPO, warm_blob, b.xfer_timeout)
        cold_concurrent(1, warm_blob, 0)
        # the blob the warm phase reads must be the one both mirrors cached
        for name in (SM, REF):
            if conc["1"][name]["ok"] != 1:
                raise BenchError(f"the single cold pull via {name} failed: "
                                 f"{conc['1'][name]['errors']}")
        wait_ref_stored(b, "ref-proxy", warm_blob)
        if "warm" in args.phases:
            run_warm(b, ss, mirrors, counters, warm_blob)
        if "concurrent" in args.phases:
            for i, n in enumerate(args.clients):
                blob = b.pool.take("proxied")
                push_monolithic(up.port, REPO, blob, b.xfer_timeout)
                cold_concurrent(n, blob, i + 1)
        b.data["mirror_peak_rss_mib"] = {
            name: b.sampler.peak_tree_kib.get(mirrors[name].name, 0) / 1024 for name in mirrors}
    finally:
        ss.stop()


def settle_counter(proxy: CountProxy, quiet_s: float, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    st = proxy.stats()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        nxt = proxy.stats()
        if nxt["down"] != st["down"]:
            still_since = time.monotonic()
        st = nxt
        if time.monotonic() - still_since >= quiet_s:
            return st
    log(f"{proxy.name}: upstream bytes still moving after {limit_s:.0f}s")
    return st


def wait_ref_stored(b: Bench, name: str, blob: Blob) -> None:
    """docker-registry's proxy stores its copy in the background; wait until it is there."""
    path = ref_blob_path(b.work, name, blob.digest)
    deadline = time.monotonic() + b.xfer_timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if path.stat().st_size == blob.size:
                return
        time.sleep(0.2)
    raise BenchError(f"docker-registry proxy never stored {blob.digest} ({path})")


def run_warm(b: Bench, ss: ServerSet, mirrors: dict[str, Server],
             counters: dict[str, CountProxy], blob: Blob) -> None:
    args = b.args
    out: dict[str, Any] = {SM: [], REF: [], "noisy": {SM: [], REF: []}, "upstream_bytes": {}}
    b.data["warm"] = out
    for name in (SM, REF):
        counters[name].reset()
    order = [SM, REF]
    for r in range(args.warm_rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            def same(attempt: int) -> Blob:
                return blob

            def get(bl: Blob, name: str = name) -> float:
                return get_blob_curl(mirrors[name].port, REPO, bl, b.xfer_timeout)

            mbps, _win, noisy = b.measure("warm", f"warm via {name}", ss.pids(), same, get)
            out[name].append(mbps)
            out["noisy"][name].append(noisy)
            log(f"warm via {MIRROR_LABEL[name]:22s}: {mbps:8.1f} MB/s"
                + (" (noisy)" if noisy else ""))
    out["verify"] = {name: verify_blob_get(mirrors[name].port, REPO, blob, b.xfer_timeout)
                     for name in (SM, REF)}
    for name in (SM, REF):
        st = counters[name].stats()
        out["upstream_bytes"][name] = st["down"]
        out.setdefault("upstream_blob_gets", {})[name] = len(blob_gets(st, blob.digest))
    log(f"warm: sha256 checks {out['verify']}; upstream bytes during warm pulls "
        f"{out['upstream_bytes']}")
    ss.check_alive()


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def cold_summary(rows: dict[str, Any]) -> dict[str, Any] | None:
    d, m = rows.get("direct") or [], rows.get("mirror") or []
    if not d or not m:
        return None
    bd = min(d, key=lambda x: x["total"])
    bm = min(m, key=lambda x: x["total"])
    td = statistics.median(x["ttfb"] for x in d)
    tm = statistics.median(x["ttfb"] for x in m)
    paired = [mm["total"] / dd["total"] for dd, mm in zip(d, m, strict=False)]
    return {
        "direct_s": bd["total"], "mirror_s": bm["total"], "ratio": bm["total"] / bd["total"],
        "direct_mbps": bd["mbps"], "mirror_mbps": bm["mbps"],
        "direct_ttfb_ms": td * 1000, "mirror_ttfb_ms": tm * 1000,
        "ttfb_delta_ms": (tm - td) * 1000, "paired_ratios": paired,
        "direct_noisy": rows["noisy"]["direct"][d.index(bd)],
        "mirror_noisy": rows["noisy"]["mirror"][m.index(bm)],
    }


def target_rows(data: dict[str, Any], clients: list[int]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for kind, cr in data.get("cold", {}).items():
        s = cold_summary(cr)
        up = cold_label(kind)
        if s is None:
            rows.append((f"cold pull ≤ {COLD_TIME_TARGET:.2f}x direct, upstream {up}", "—",
                         "n/a"))
            continue
        ctx = " (context)" if "@" in kind else ""  # paced link: not the loopback target
        rows.append((f"cold pull time ≤ {COLD_TIME_TARGET:.2f}x direct, upstream {up}{ctx}",
                     f"{s['ratio']:.2f}x", verdict(s["ratio"] <= COLD_TIME_TARGET) + ctx))
        rows.append((f"cold TTFB ≤ direct + {TTFB_TARGET_MS:.0f} ms, upstream {up}{ctx}",
                     f"{s['ttfb_delta_ms']:+.1f} ms",
                     verdict(s["ttfb_delta_ms"] <= TTFB_TARGET_MS) + ctx))
        checks = cr.get("verify", {})
        if checks:
            rows.append((f"sha256 of full downloads, upstream {up}",
                         ", ".join(f"{k}: {v}" for k, v in checks.items()),
                         verdict(all(v == "ok" for v in checks.values()))))
    warm = data.get("warm")
    if warm and warm.get(SM) and warm.get(REF):
        r = max(warm[SM]) / max(warm[REF])
        rows.append((f"warm pull ≥ {WARM_TARGET:.1f}x docker-registry proxy", f"{r:.2f}x",
                     verdict(r >= WARM_TARGET)))
        checks = warm.get("verify", {})
        gets = warm.get("upstream_blob_gets", {})
        rows.append(("warm: sha256 of a full download; no upstream blob GET",
                     ", ".join(f"{k}: {v}" for k, v in checks.items())
                     + f"; upstream blob GETs {gets.get(SM, '?')} / {gets.get(REF, '?')}",
                     verdict(all(v == "ok" for v in checks.values())
                             and not any(gets.values()))))
    conc = data.get("concurrent", {})
    for n in [1, *clients]:
        row = conc.get(str(n))
        if not row or SM not in row:
            continue
        s = row[SM]
        rows.append((f"{n} concurrent cold pull{'s' if n > 1 else ''}: upstream sends the "
                     "blob once (stablemirror)", f"{s['upstream_ratio']:.3f}x",
                     verdict(s["upstream_ratio"] <= UPSTREAM_ONCE_SLACK)))
        rows.append((f"{n} concurrent cold pull{'s' if n > 1 else ''}: every client gets "
                     "correct bytes (stablemirror)", f"{s['ok']}/{n}", verdict(s["ok"] == n)))
    return rows


def report_markdown(b: Bench, info: dict[str, str], started: dt.datetime, wall: float,
                    fatal: str | None) -> str:
    args, data = b.args, b.data
    mode = "quick" if args.quick else "full"
    size = args.size_mib
    loads = b.loads
    worst = max(loads) if loads else (0.0, "?")
    mean = sum(x for x, _ in loads) / len(loads) if loads else 0.0
    out = [
        f"## Mirror benchmarks, {mode} run",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Reference: `{info['reference']}` (filesystem storage); clients: curl "
        f"({curl_version()}) for single pulls, threads on raw sockets hashing with sha256 "
        "for concurrent pulls",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        f"- stablemirror code: {data.get('code', '?')}",
        f"- Servers: stablemirror `serve --workers {args.workers}` (hosted upstream, and "
        "mirrors with `--upstream URL`), STABLEMIRROR_LOG_LEVEL=error; docker-registry "
        "log level error, access log off, filesystem storage (proxy mode: `proxy: remoteurl:`)",
        f"- Load average before / after: {data.get('load_before', '?')} / "
        f"{data.get('load_after', '?')}; CPU used by other processes during the timed "
        f"measurements: mean {mean:.2f} cores, worst {worst[0]:.2f} ({worst[1]}); results "
        f"discarded and re-measured because other processes used more than "
        f"{args.max_other_load} cores: {b.discarded}",
        f"- Parameters: blob {size} MiB (random, a never-seen one for every cold pull); cold: "
        f"{args.cold_rounds} rounds per upstream, direct and mirror pull of the same fresh blob "
        f"(order alternating), best total time and median TTFB reported; warm: best of "
        f"{args.warm_rounds} curl GETs; concurrent: {', '.join(map(str, args.clients))} "
        f"clients, upstream for warm and concurrent pulls: {KIND_LABEL[args.proxy_upstream]}"
        + (f"; paced-link rows: {', '.join(f'{x:g}' for x in args.links)} MB/s per connection "
           f"(bench/countproxy.py --rate) in front of {KIND_LABEL[args.link_upstream]}, for "
           "the direct pull and the mirror's fetch alike" if args.links else ""),
        "",
    ]
    if fatal:
        out += [f"**Run aborted:** `{fatal.splitlines()[0][:300]}`", ""]
    other_errors = [e for e in b.errors if e != fatal]
    if other_errors:
        out += ["**Errors** (these parts are missing below):", ""]
        out += [f"- `{e.splitlines()[0][:300]}`" for e in other_errors] + [""]
    cold = data.get("cold", {})
    if cold:
        out += [
            f"Cold pull of a {size} MiB blob, mirror vs. direct from the upstream (curl, "
            "`-o /dev/null`):",
            "",
            "| Upstream | direct s | mirror s | mirror / direct | direct MB/s | mirror MB/s "
            "| direct TTFB ms | mirror TTFB ms | TTFB delta |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, cr in cold.items():
            s = cold_summary(cr)
            if s is None:
                out.append(f"| {cold_label(kind)} | ERROR | | | | | | | |")
                continue
            nd = " (noisy)" if s["direct_noisy"] else ""
            nm = " (noisy)" if s["mirror_noisy"] else ""
            out.append(
                f"| {cold_label(kind)} | {s['direct_s']:.3f}{nd} | {s['mirror_s']:.3f}{nm} | "
                f"{s['ratio']:.2f}x | {s['direct_mbps']:,.0f} | {s['mirror_mbps']:,.0f} | "
                f"{s['direct_ttfb_ms']:.1f} | {s['mirror_ttfb_ms']:.1f} | "
                f"{s['ttfb_delta_ms']:+.1f} ms |")
        out.append("")
    warm = data.get("warm")
    if warm and warm.get(SM) and warm.get(REF):
        sm_best, ref_best = max(warm[SM]), max(warm[REF])
        out += [
            f"Warm (cached) pull of the same {size} MiB blob (curl, best of "
            f"{args.warm_rounds}):",
            "",
            "| docker-registry proxy MB/s | stablemirror mirror MB/s | stablemirror / "
            "docker-registry |",
            "|---|---|---|",
            f"| {ref_best:,.0f} | {sm_best:,.0f} | {sm_best / ref_best:.2f}x |",
            "",
        ]
    conc = data.get("concurrent", {})
    if conc:
        out += [
            f"Concurrent cold pulls of one never-seen {size} MiB blob (upstream bytes counted "
            "by a proxy between each mirror and the upstream):",
            "",
            "| Clients | Mirror | upstream bytes / blob | upstream blob GETs | wall s | "
            "client median s | client max s | TTFB median ms | correct clients | mirror CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in [1, *args.clients]:
            row = conc.get(str(n), {})
            for name in (SM, REF):
                r = row.get(name)
                if r is None:
                    continue
                def f(v: float | None, scale: float = 1.0, p: int = 2) -> str:
                    return "—" if v is None else f"{v * scale:.{p}f}"
                out.append(
                    f"| {n} | {MIRROR_LABEL[name]} | {r['upstream_ratio']:.2f}x | "
                    f"{r['upstream_blob_gets']} | {f(r['wall'])}"
                    f"{' (noisy)' if r['noisy'] else ''} | {f(r['client_median'])} | "
                    f"{f(r['client_max'])} | {f(r['ttfb_median'], 1000, 1)} | "
                    f"{r['ok']}/{n} | {r['mirror_cpu']:.1f} |")
        out.append("")
    rows = target_rows(data, args.clients)
    if rows:
        out += ["Targets:", "", "| Target | Measured | Result |", "|---|---|---|"]
        out += [f"| {t} | {m} | {v} |" for t, m, v in rows]
        out.append("")
    out += ["<details><summary>Details</summary>", ""]
    for kind, cr in cold.items():
        for via in ("direct", "mirror"):
            rs = cr.get(via) or []
            if rs:
                out.append(
                    f"- cold, upstream {cold_label(kind)}, {via}: " + "; ".join(
                        f"{x['total']:.3f} s / TTFB {x['ttfb'] * 1000:.1f} ms"
                        + (" (noisy)" if cr["noisy"][via][i] else "")
                        for i, x in enumerate(rs)))
        s = cold_summary(cr)
        if s:
            out.append(f"- cold, upstream {cold_label(kind)}: mirror / direct per round "
                       + ", ".join(f"{x:.2f}x" for x in s["paired_ratios"]))
        cpu = cr.get("cpu_s", {})
        gib = len(cr.get("mirror") or []) * size / 1024
        if cpu and gib:
            bits = [f"{n} {c / gib:.2f}" for n, c in sorted(cpu.get("mirror", {}).items())]
            out.append(f"- cold, upstream {cold_label(kind)}: CPU s/GiB during mirror pulls: "
                       + ", ".join(bits))
            bits = [f"{n} {c / gib:.2f}" for n, c in sorted(cpu.get("direct", {}).items())]
            out.append(f"- cold, upstream {cold_label(kind)}: CPU s/GiB during direct pulls: "
                       + ", ".join(bits))
        prof = cr.get("profile")
        if prof and "summary" in prof:
            out.append(f"- cold, upstream {cold_label(kind)}: one more (untimed) mirror pull "
                       f"under py-spy took {prof['total']:.3f} s; stacks in `{prof['file']}`, "
                       f"summary in `{prof['summary']}`")
    if warm:
        for name in (SM, REF):
            if warm.get(name):
                out.append(f"- warm via {MIRROR_LABEL[name]}: " + ", ".join(
                    f"{v:,.0f}" + (" (noisy)" if warm["noisy"][name][i] else "")
                    for i, v in enumerate(warm[name])) + " MB/s")
        if "upstream_blob_gets" in warm:
            out.append(f"- warm: upstream blob GETs during the warm pulls (stablemirror / "
                       f"docker-registry): {warm['upstream_blob_gets'].get(SM)} / "
                       f"{warm['upstream_blob_gets'].get(REF)}; all upstream bytes (health "
                       f"checks included): {warm['upstream_bytes'].get(SM)} / "
                       f"{warm['upstream_bytes'].get(REF)}")
    for n in [1, *args.clients]:
        for name in (SM, REF):
            r = conc.get(str(n), {}).get(name)
            if r:
                out.append(
                    f"- {n} client{'s' if n > 1 else ''} via {MIRROR_LABEL[name]}: "
                    f"{r['upstream_bytes']:,} upstream "
                    f"bytes, {r['upstream_requests']} upstream requests, Range headers "
                    f"{r['upstream_ranges'] or 'none'}, TTFB max "
                    f"{(r['ttfb_max'] or 0) * 1000:.1f} ms, CPU s mirror "
                    f"{r['mirror_cpu']:.1f} / upstream {r['upstream_cpu']:.1f} / counting proxy "
                    f"{r['proxy_cpu']:.1f}, other load {r['other_load']:.2f} cores"
                    + (f", errors {r['errors']}" if r["errors"] else ""))
    rss = data.get("mirror_peak_rss_mib")
    if rss:
        out.append(f"- peak RSS (process tree) of the mirrors in the warm/concurrent phases: "
                   f"stablemirror {rss.get(SM, 0):.0f} MiB, docker-registry proxy "
                   f"{rss.get(REF, 0):.0f} MiB")
    out += ["", "</details>", ""]
    out += ["Notes:", "", *auto_notes(b)]
    if args.notes_text:
        out += [args.notes_text.strip()]
    out.append("")
    return "\n".join(out)


def auto_notes(b: Bench) -> list[str]:
    """What the numbers mean, worked out from this run's own figures."""
    data, args = b.data, b.args
    out: list[str] = []
    sha = data.get("sha256_mbps")
    size = args.size_mib * MiB
    if sha:
        floor = size / (sha * 1e6)
        bits = []
        for kind, cr in data.get("cold", {}).items():
            s = cold_summary(cr)
            if s and "@" not in kind:
                bits.append(f"{floor / s['direct_s']:.2f}x over {cold_label(kind)}")
        out.append(
            f"- SHA-256 of one stream runs at {sha:,.0f} MB/s on one core of this machine "
            f"(hashlib, measured in this run), so any mirror that verifies the digest before "
            f"it completes a response needs at least {floor:.2f} s for {args.size_mib} MiB, "
            f"whatever else it overlaps: a floor of "
            + (", ".join(bits) if bits else "?")
            + " for the loopback cold-pull ratio (direct pulls are sendfile(2) on loopback). "
            "The paced-link rows show where a link, not the CPU, is the limit.")
    conc = data.get("concurrent", {})
    fetched = [(n, conc[str(n)][REF]) for n in [1, *args.clients]
               if REF in conc.get(str(n), {})]
    if fetched:
        out.append("- docker-registry's proxy fetched the blob " + ", ".join(
            f"{r['upstream_ratio']:.2f} times for {n} client{'s' if n > 1 else ''}"
            for n, r in fetched) + " (one upstream stream per client, plus one to store its "
            "own copy); stablemirror's mirror fetched it once in every case (table above).")
    if any(str(n) in conc for n in args.clients):
        out.append("- Concurrent pulls: every client thread hashes all it receives, on the same "
                   "2 cores as the servers, so wall times include the clients' SHA-256 work "
                   "(N x the blob) for both mirrors alike.")
    out.append("- Each cold pull gets a blob its mirror has never seen (pushed to the upstream "
               "just before); the upstream has it in the page cache, and `sync` runs before "
               "every timed pull.")
    return out


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


def curl_version() -> str:
    try:
        return subprocess.run(["curl", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def print_summary(b: Bench) -> None:
    for kind, cr in b.data.get("cold", {}).items():
        s = cold_summary(cr)
        if s:
            print(f"  cold, upstream {cold_label(kind):22s}: direct {s['direct_s']:.3f}s, "
                  f"mirror {s['mirror_s']:.3f}s ({s['ratio']:.2f}x); TTFB direct "
                  f"{s['direct_ttfb_ms']:.1f} ms, mirror {s['mirror_ttfb_ms']:.1f} ms "
                  f"({s['ttfb_delta_ms']:+.1f} ms)")
    warm = b.data.get("warm")
    if warm and warm.get(SM) and warm.get(REF):
        print(f"  warm: stablemirror {max(warm[SM]):,.0f} MB/s, docker-registry proxy "
              f"{max(warm[REF]):,.0f} MB/s ({max(warm[SM]) / max(warm[REF]):.2f}x)")
    for n in [1, *b.args.clients]:
        for name in (SM, REF):
            r = b.data.get("concurrent", {}).get(str(n), {}).get(name)
            if r:
                print(f"  {n:3d} clients via {MIRROR_LABEL[name]:22s}: upstream "
                      f"{r['upstream_ratio']:.2f}x blob, wall {r['wall'] or 0:.2f}s, "
                      f"{r['ok']}/{n} correct")
    for t, m, v in target_rows(b.data, b.args.clients):
        print(f"  {v:4s}  {t}: {m}")


# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="256 MiB blobs, 2 cold rounds, 3 warm GETs, 8 concurrent clients")
    p.add_argument("--size-mib", type=int, help="blob size (default 1024; quick 256)")
    p.add_argument("--cold-rounds", type=int, help="cold rounds per upstream (3; quick 2)")
    p.add_argument("--warm-rounds", type=int, help="warm GETs per mirror (5; quick 3)")
    p.add_argument("--clients", help="comma-separated concurrent client counts (8,32; quick 8)")
    p.add_argument("--phases", default="cold,warm,concurrent",
                   help="subset of cold,warm,concurrent (default: all)")
    p.add_argument("--upstreams", default=f"{SM},{REF}",
                   help="upstreams for the cold phase: stablemirror,reference (default both)")
    p.add_argument("--links", default="1250,125",
                   help="extra cold rows with the upstream behind a pacing proxy of these MB/s "
                   "(both the direct pull and the mirror's fetch go through it; default "
                   "1250,125 = about 10 and 1 Gbit/s; empty: none)")
    p.add_argument("--link-upstream", choices=[SM, REF], default=SM,
                   help="the upstream of the paced cold rows (default: stablemirror)")
    p.add_argument("--proxy-upstream", choices=[SM, REF], default=REF,
                   help="the upstream behind both mirrors in the warm and concurrent phases "
                   "(default: reference, i.e. docker-registry)")
    p.add_argument("--code", choices=["worktree", "HEAD", "live"], default="worktree",
                   help="the stablemirror source the servers run: worktree = a copy of src/ "
                   "taken at the start (edits during the run cannot mix versions; default), "
                   "HEAD = the last commit's src/, live = src/ as on disk at each server start")
    p.add_argument("--workers", type=int, default=2, help="stablemirror --workers")
    p.add_argument("--python", default=str(REPO_ROOT / ".venv/bin/python"),
                   help="interpreter that runs stablemirror")
    p.add_argument("--tmpdir", help="parent of the run's temp dir (default: $TMPDIR or /tmp)")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="wait up to N s for other CPU use to drop below 0.25 cores first")
    p.add_argument("--max-other-load", type=float, default=0.35,
                   help="CPU cores other processes may use during a measurement before it is "
                   "repeated")
    p.add_argument("--noisy-retries", type=int, default=2,
                   help="times a measurement disturbed by other load is repeated")
    p.add_argument("--retry-budget", type=float, default=120.0,
                   help="seconds each kind of measurement may lose to re-measuring")
    p.add_argument("--profile", metavar="DIR",
                   help="after the timed cold rounds, one extra cold pull through each mirror "
                   "under py-spy (raw collapsed stacks per thread) into DIR")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-idle", action="store_true",
                   help="py-spy --idle: also sample threads that wait (off: CPU only)")
    p.add_argument("--notes", help="a file whose text is added under 'Notes:' in RESULTS.md")
    add_output_args(p, RESULTS_MD, deadline=2400.0)
    args = p.parse_args(argv)
    if args.size_mib is None:
        args.size_mib = 256 if args.quick else 1024
    if args.cold_rounds is None:
        args.cold_rounds = 2 if args.quick else 3
    if args.warm_rounds is None:
        args.warm_rounds = 3 if args.quick else 5
    if args.clients is None:
        args.clients = "8" if args.quick else "8,32"
    try:
        args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        p.error("--clients takes comma-separated integers")
    if any(n < 1 or n > 256 for n in args.clients):
        p.error("--clients: between 1 and 256 each")
    args.clients = [n for n in args.clients if n != 1]  # 1 client is always measured
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not args.phases or args.phases - {"cold", "warm", "concurrent"}:
        p.error("--phases takes a subset of cold,warm,concurrent")
    try:
        args.links = [float(x) for x in args.links.split(",") if x.strip()]
    except ValueError:
        p.error("--links takes comma-separated MB/s figures")
    if any(x <= 0 for x in args.links):
        p.error("--links: positive MB/s figures")
    args.upstreams = [x.strip() for x in args.upstreams.split(",") if x.strip()]
    if not args.upstreams or set(args.upstreams) - {SM, REF}:
        p.error("--upstreams takes stablemirror and/or reference")
    for name in ("size_mib", "cold_rounds", "warm_rounds", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    args.notes_text = Path(args.notes).read_text() if args.notes else ""
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not tools_present("curl", "docker-registry"):
        return 2
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="stablemirror-mirror-bench-", dir=args.tmpdir))

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    sampler = RssSampler()
    pool = BlobPool(work, args.size_mib * MiB)
    b = Bench(args, work, pool, sampler, time.monotonic() + args.deadline)
    b.xfer_timeout = max(300.0, args.size_mib * MiB / 2e6)
    fatal: str | None = None
    try:
        if args.wait_quiet > 0:
            busy = wait_for_quiet(args.wait_quiet)
            log(f"other CPU use before the run: {busy:.2f} cores")
        global CODE_SRC
        CODE_SRC, b.data["code"] = snapshot_code(args.code, work)
        log(f"stablemirror code: {b.data['code']}")
        b.data["load_before"] = loadavg()
        b.data["sha256_mbps"] = sha256_mbps()
        log(f"SHA-256 (hashlib, one stream): {b.data['sha256_mbps']:,.0f} MB/s")
        sampler.start()
        parts: list[tuple[str, Callable[[], None]]] = []
        if "cold" in args.phases:
            parts += [(f"cold {k}", functools.partial(run_cold, b, k)) for k in args.upstreams]
            parts += [(f"cold {x:g} MB/s", functools.partial(run_cold, b, args.link_upstream, x))
                      for x in args.links]
        if args.phases & {"warm", "concurrent"}:
            parts.append(("warm/concurrent", functools.partial(run_proxy_phases, b)))
        for what, part in parts:
            try:  # one part failing (a server that died, say) does not lose the others
                part()
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                msg = f"{what}: {type(exc).__name__}: {exc}"
                b.errors.append(msg)
                log(f"FAILED {msg}")
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        fatal = f"{type(exc).__name__}: {exc}"
        b.errors.append(fatal)
        log(f"FATAL: {fatal}")
    except KeyboardInterrupt:
        fatal = "interrupted"
        log("interrupted")
    finally:
        b.data["load_after"] = loadavg()
        sampler.stop()
        pool.remove()
        if args.keep_tmp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - t_start
    info = machine_info()
    print()
    print_summary(b)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"date": started.isoformat(), "machine": info, "command": command_line(),
             "args": {k: (sorted(v) if isinstance(v, set) else v)
                      for k, v in vars(args).items()},
             "data": b.data, "discarded": b.discarded, "loads": b.loads, "fatal": fatal},
            indent=2, default=str))
    if not args.no_results and fatal != "interrupted":
        mode = "mirror-quick" if args.quick else "mirror-full"
        section = report_markdown(b, info, started, wall, fatal)
        update_results_file(Path(args.results), mode, section)
        log(f"updated {args.results} ({mode} section)")
    if fatal or b.errors:
        return 2
    if args.fail_on_target and any(v == "FAIL" for *_, v in target_rows(b.data, args.clients)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
