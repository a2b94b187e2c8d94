#!/usr/bin/env python3
"""Side-by-side benchmark: stablemirror vs. the reference registry (CNCF docker-registry 2.8).

Run from the repository root:

    .venv/bin/python bench/run.py            # full run: 1 GiB blobs, wrk 10 s
    .venv/bin/python bench/run.py --quick    # 256 MiB blobs, wrk 3 s
    .venv/bin/python bench/run.py --only reference   # develop against docker-registry alone

Both servers are started on 127.0.0.1 with throw-away storage in a temp dir, measured in
the same run with the same clients, then stopped; the temp dir is removed.  See
bench/README.md for what each metric means.  Only the standard library, curl and wrk are
used on the client side.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "manifest_get.lua"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

MiB = 1 << 20
HOST = "127.0.0.1"
REF = "reference"
SM = "stablemirror"
SERVERS = (REF, SM)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT_MANIFESTS = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)

# (metric key, label, unit, higher_is_better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("push_mono", "Monolithic push (POST + PUT)", "MB/s", True),
    ("push_chunked", "Chunked push (PATCH x N + PUT)", "MB/s", True),
    ("blob_get", "Blob GET (best of N)", "MB/s", True),
    ("manifest_tag", "Manifest GET by tag", "req/s", True),
    ("manifest_digest", "Manifest GET by digest", "req/s", True),
    ("peak_rss", "Peak RSS, process tree", "MiB", False),
]
# (label, metric keys, minimum stablemirror/reference ratio)
TARGETS: list[tuple[str, list[str], float]] = [
    ("blob GET", ["blob_get"], 1.0),
    ("push", ["push_mono", "push_chunked"], 1.0),
    ("manifest GET", ["manifest_tag", "manifest_digest"], 3.0),
]


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Minimal HTTP/1.1 client.  Request bodies are streamed from a file with sendfile(2), so
# the 1 GiB test blob never enters Python memory and the client costs next to no CPU.
# --------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def _recv_response(sock: socket.socket, method: str, max_body: int) -> Response:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before response headers")
        buf += chunk
        if len(buf) > 1 * MiB:
            raise BenchError("response headers too large")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    body = bytearray(rest)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, reason, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return Response(status, reason, headers, _read_chunked(sock, body, max_body))
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > max_body:
            raise BenchError(f"response body of {length} bytes exceeds {max_body}")
        while len(body) < length:
            chunk = sock.recv(min(1 * MiB, length - len(body)))
            if not chunk:
                raise BenchError("connection closed mid-body")
            body += chunk
        return Response(status, reason, headers, bytes(body[:length]))
    while True:  # read to EOF (we always send Connection: close)
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        if len(body) > max_body:
            raise BenchError("response body too large")
    return Response(status, reason, headers, bytes(body))


def _read_chunked(sock: socket.socket, pending: bytearray, max_body: int) -> bytes:
    out = bytearray()
    buf = pending

    def fill(n: int) -> None:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError("connection closed in chunked body")
            buf.extend(chunk)

    while True:
        while b"\r\n" not in buf:
            fill(len(buf) + 1)
        line, _, remainder = bytes(buf).partition(b"\r\n")
        buf[:] = remainder
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        fill(size + 2)
        out += buf[:size]
        del buf[: size + 2]
        if len(out) > max_body:
            raise BenchError("response body too large")


def http(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    body_file: Path | None = None,
    offset: int = 0,
    count: int | None = None,
    timeout: float = 30.0,
    max_body: int = 16 * MiB,
) -> Response:
    """One request on a fresh connection.  `body_file[offset:offset+count]` is sent with
    sendfile(2) when given, else `body`."""
    hdrs = {"Host": f"{HOST}:{port}", "User-Agent": "stablemirror-bench/1", "Connection": "close"}
    hdrs.update(headers or {})
    if body_file is not None:
        if count is None:
            count = body_file.stat().st_size - offset
        length = count
    else:
        length = len(body)
    if method in ("POST", "PUT", "PATCH") or length:
        hdrs["Content-Length"] = str(length)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        send_error: OSError | None = None
        try:
            if body_file is not None:
                with body_file.open("rb") as f:
                    sent = sock.sendfile(f, offset, count)
                if sent != count:
                    raise BenchError(f"sendfile sent {sent} of {count} bytes")
            elif body:
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError) as exc:
            send_error = exc  # the server may have answered early with an error
        try:
            return _recv_response(sock, method, max_body)
        except (OSError, BenchError) as exc:
            if send_error is not None:
                raise BenchError(f"{method} {target}: {send_error}") from exc
            raise


def expect(resp: Response, statuses: tuple[int, ...], what: str) -> Response:
    if resp.status not in statuses:
        detail = resp.body[:300].decode("utf-8", "replace")
        raise BenchError(f"{what}: HTTP {resp.status} {resp.reason} (wanted {statuses}) {detail}")
    return resp


def location_target(resp: Response, port: int, what: str) -> str:
    """The path+query of a Location header (absolute or relative); loopback only."""
    loc = resp.header("location")
    if not loc:
        raise BenchError(f"{what}: no Location header")
    url = urllib.parse.urljoin(f"http://{HOST}:{port}/", loc)
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname not in (HOST, "localhost") or (parsed.port or 80) != port:
        raise BenchError(f"{what}: Location points off this server: {loc}")
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def with_digest(target: str, digest: str) -> str:
    sep = "&" if "?" in target else "?"
    return f"{target}{sep}digest={urllib.parse.quote(digest, safe='')}"


# --------------------------------------------------------------------------------------
# Process-tree sampling: RSS (VmRSS summed over the tree, VmHWM per process) and CPU time.
# --------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def tree_pids(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    if kids is None:
        kids = _children_map()
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _status_kib(pid: int) -> dict[str, int]:
    vals: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    vals[key] = int(value.split()[0])
    except OSError:
        pass
    return vals


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of every live process in the tree, plus reaped children of the root."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[0] is field 3 (state); utime/stime are fields 14/15, cutime/cstime 16/17
        total += int(fields[11]) + int(fields[12])
        if pid == root:
            total += int(fields[13]) + int(fields[14])
    return total / _CLK_TCK


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores, steal included), from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = vals
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def own_cpu_seconds() -> float:
    """CPU time of this process and its reaped children (curl, wrk, openssl)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most max_wait s) until the machine's CPU use over 2 s is below threshold
    cores; return the last measured load in cores."""
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(min(2.0, max(0.5, deadline - t0)))
        busy = (system_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        if not said:
            log(f"machine busy ({busy:.2f} cores in use); waiting up to {max_wait:.0f}s")
            said = True


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.phase = "startup"
        self.peak_tree_kib: dict[str, int] = {}
        self.peak_phase_kib: dict[tuple[str, str], int] = {}
        self.hwm_kib: dict[str, dict[int, int]] = {}
        self.max_procs: dict[str, int] = {}
        self.peak_pss_kib: dict[str, int] = {}
        self._n = 0
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.roots[name] = pid

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
            phase = self.phase
        kids = _children_map()  # one /proc scan per sample for all servers
        self._n += 1
        with_pss = self._n % 5 == 1  # smaps_rollup walks page tables: sample it less often
        for name, root in roots.items():
            pids = tree_pids(root, kids)
            if with_pss:
                pss = sum(_pss_kib(pid) for pid in pids)
                self.peak_pss_kib[name] = max(self.peak_pss_kib.get(name, 0), pss)
            total = 0
            for pid in pids:
                vals = _status_kib(pid)
                total += vals.get("VmRSS", 0)
                hwm = self.hwm_kib.setdefault(name, {})
                hwm[pid] = max(hwm.get(pid, 0), vals.get("VmHWM", 0))
            self.peak_tree_kib[name] = max(self.peak_tree_kib.get(name, 0), total)
            key = (name, phase)
            self.peak_phase_kib[key] = max(self.peak_phase_kib.get(key, 0), total)
            self.max_procs[name] = max(self.max_procs.get(name, 0), len(pids))

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase

    def run(self) -> None:
        while not self._stop_evt.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sample()

    def hwm_sum_kib(self, name: str) -> int:
        return sum(self.hwm_kib.get(name, {}).values())


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0

    def start(self, sampler: RssSampler, timeout: float) -> None:
        log(f"starting {self.name}: {shlex.join(self.argv)}")
        logf = self.log_path.open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(REPO_ROOT),
            env=self.env,
            start_new_session=True,  # own process group, so the whole tree can be stopped
        )
        logf.close()
        sampler.add(self.name, self.proc.pid)
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode} during startup:\n"
                    + self.log_tail()
                )
            try:
                resp = http(self.port, "GET", "/v2/", timeout=2)
                if resp.status == 200:
                    self.startup_s = time.monotonic() - t0
                    log(f"{self.name} ready on :{self.port} after {self.startup_s:.2f}s")
                    return
                last = f"HTTP {resp.status}"
            except (OSError, BenchError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout}s ({last}):\n" + self.log_tail())

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # == pgid thanks to start_new_session
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # the group may still hold workers even if the leader is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def reference_server(work: Path, quiet: bool) -> Server:
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    port = free_port()
    root = work / "reference-data"
    root.mkdir()
    config = work / "reference-config.yml"
    # JSON is valid YAML; docker-registry parses it fine.
    config.write_text(
        json.dumps(
            {
                "version": 0.1,
                "log": {"level": "error" if quiet else "info", "accesslog": {"disabled": quiet}},
                "storage": {
                    "filesystem": {"rootdirectory": str(root)},
                    "delete": {"enabled": True},
                    "cache": {"blobdescriptor": "inmemory"},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                "http": {"addr": f"{HOST}:{port}", "secret": os.urandom(16).hex()},
            },
            indent=2,
        )
        + "\n"
    )
    return Server(REF, port, [exe, "serve", str(config)], work / "reference.log")


SM_COMMAND = (
    "{python} -m stablemirror serve --listen {listen} --data-dir {data_dir} --workers {workers}"
)


def stablemirror_server(
    work: Path, python: str, workers: int, template: str, quiet: bool
) -> Server:
    port = free_port()
    data = work / "stablemirror-data"
    data.mkdir()
    argv = [
        part.format(python=python, listen=f"{HOST}:{port}", data_dir=data, workers=workers)
        for part in shlex.split(template)
    ]
    env = dict(os.environ)
    env.pop("STABLEMIRROR_LOG_LEVEL", None)
    if quiet:  # pydantic-settings reads it; the counterpart of docker-registry's log.level
        env["STABLEMIRROR_LOG_LEVEL"] = "error"
    return Server(SM, port, argv, work / "stablemirror.log", env=env)


# --------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------


@dataclass
class Blob:
    path: Path
    size: int
    digest: str


def make_random_file(path: Path, size: int) -> Blob:
    """Random (incompressible) bytes, hashed as they are written.  Uses openssl's AES-CTR
    keystream with a random key when available (~1 GB/s), else os.urandom (~200 MB/s)."""
    h = hashlib.sha256()
    step = 8 * MiB
    openssl = shutil.which("openssl")
    with path.open("wb") as out:
        if openssl:
            argv = [
                openssl,
                "enc",
                "-aes-128-ctr",
                "-nosalt",
                "-K",
                os.urandom(16).hex(),
                "-iv",
                os.urandom(16).hex(),
            ]
            with subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            ) as enc:
                assert enc.stdin is not None and enc.stdout is not None
                feeder = threading.Thread(target=_feed_zeros, args=(enc.stdin, size), daemon=True)
                feeder.start()
                left = size
                while left:
                    chunk = enc.stdout.read(min(step, left))
                    if not chunk:
                        raise BenchError("openssl keystream ended early")
                    h.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
                enc.stdout.close()
                feeder.join(timeout=10)
                enc.wait(timeout=10)
        else:
            left = size
            while left:
                chunk = os.urandom(min(step, left))
                h.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return Blob(path, size, "sha256:" + h.hexdigest())


def _feed_zeros(pipe: Any, size: int) -> None:
    zeros = bytes(1 * MiB)
    left = size + 64  # a little extra; openssl may buffer a block
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        while left > 0:
            n = min(len(zeros), left)
            pipe.write(zeros[:n])
            left -= n
        pipe.close()


def settle() -> None:
    """Flush dirty pages so one server's writeback doesn't land in the next measurement."""
    os.sync()
    time.sleep(0.5)


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def push_monolithic(port: int, repo: str, blob: Blob, timeout: float) -> float:
    t0 = time.perf_counter()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = with_digest(location_target(resp, port, "POST upload"), blob.digest)
    resp = http(
        port,
        "PUT",
        target,
        headers={"Content-Type": "application/octet-stream"},
        body_file=blob.path,
        timeout=timeout,
    )
    expect(resp, (201,), "PUT monolithic")
    elapsed = time.perf_counter() - t0
    check_pushed(port, repo, blob, resp)
    return blob.size / elapsed / 1e6


def push_chunked(port: int, repo: str, blob: Blob, chunk: int, timeout: float) -> float:
    t0 = time.perf_counter()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = location_target(resp, port, "POST upload")
    offset = 0
    n = 0
    while offset < blob.size and n < 100_000:
        count = min(chunk, blob.size - offset)
        resp = http(
            port,
            "PATCH",
            target,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + count - 1}",
            },
            body_file=blob.path,
            offset=offset,
            count=count,
            timeout=timeout,
        )
        expect(resp, (202,), f"PATCH chunk {n} at {offset}")
        rng = resp.header("range")
        if rng and rng != f"0-{offset + count - 1}":
            raise BenchError(f"PATCH chunk {n}: Range {rng!r}, wanted 0-{offset + count - 1}")
        target = location_target(resp, port, f"PATCH chunk {n}")
        offset += count
        n += 1
    resp = http(port, "PUT", with_digest(target, blob.digest), timeout=timeout)
    expect(resp, (201,), "PUT (close chunked upload)")
    elapsed = time.perf_counter() - t0
    check_pushed(port, repo, blob, resp)
    return blob.size / elapsed / 1e6


def check_pushed(port: int, repo: str, blob: Blob, put_resp: Response) -> None:
    got = put_resp.header("docker-content-digest")
    if got and got != blob.digest:
        raise BenchError(f"PUT answered Docker-Content-Digest {got}, wanted {blob.digest}")
    resp = expect(http(port, "HEAD", f"/v2/{repo}/blobs/{blob.digest}"), (200,), "HEAD blob")
    if int(resp.header("content-length", "-1")) != blob.size:
        raise BenchError(f"HEAD blob: Content-Length {resp.header('content-length')}")


def get_blob_curl(port: int, repo: str, blob: Blob, timeout: float) -> float:
    url = f"http://{HOST}:{port}/v2/{repo}/blobs/{blob.digest}"
    argv = [
        "curl",
        "-sS",
        "-L",
        "--max-redirs",
        "3",
        "-o",
        "/dev/null",
        "--max-time",
        str(int(timeout)),
        "-w",
        "%{http_code} %{size_download} %{time_total}",
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    parts = proc.stdout.split()
    if proc.returncode != 0 or len(parts) != 3:
        raise BenchError(f"curl GET failed ({proc.returncode}): {proc.stderr.strip()}")
    code, size, secs = int(parts[0]), int(parts[1]), float(parts[2])
    if code != 200 or size != blob.size:
        raise BenchError(f"blob GET: HTTP {code}, {size} bytes (wanted 200, {blob.size})")
    return size / secs / 1e6


def verify_blob_get(port: int, repo: str, blob: Blob, timeout: float) -> str:
    """Untimed full GET through curl, hashed as it streams, compared with the blob digest."""
    url = f"http://{HOST}:{port}/v2/{repo}/blobs/{blob.digest}"
    argv = ["curl", "-sS", "-f", "-L", "--max-redirs", "3", "--max-time", str(int(timeout)), url]
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MiB):
            h.update(chunk)
            n += len(chunk)
        _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"verify GET: curl exit {proc.returncode}: {err.decode(errors='replace')}")
    if n != blob.size or "sha256:" + h.hexdigest() != blob.digest:
        raise BenchError(f"verify GET: got {n} bytes with a different digest")
    return "ok"


def range_checks(port: int, repo: str, blob: Blob) -> str:
    """Two Range GETs (a middle slice and an open-ended tail) compared with the file."""
    checks = [(blob.size // 2 + 12345, 65536), (blob.size - 1000, None)]
    with blob.path.open("rb") as f:
        for start, length in checks:
            end = blob.size - 1 if length is None else start + length - 1
            spec = f"bytes={start}-" if length is None else f"bytes={start}-{end}"
            resp = http(port, "GET", f"/v2/{repo}/blobs/{blob.digest}", headers={"Range": spec})
            if resp.status in (301, 302, 303, 307, 308):
                return f"redirect {resp.status} (not followed)"
            expect(resp, (206,), f"Range GET {spec}")
            want_cr = f"bytes {start}-{end}/{blob.size}"
            if resp.header("content-range") != want_cr:
                got_cr = resp.header("content-range")
                raise BenchError(f"Range GET {spec}: Content-Range {got_cr!r}")
            f.seek(start)
            if resp.body != f.read(end - start + 1):
                raise BenchError(f"Range GET {spec}: body differs from the file")
    return "ok"


@dataclass
class ImageRef:
    repo: str
    tag: str
    digest: str
    body: bytes


def push_small_blob(port: int, repo: str, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = expect(http(port, "POST", f"/v2/{repo}/blobs/uploads/"), (202,), "POST upload")
    target = with_digest(location_target(resp, port, "POST upload"), digest)
    headers = {"Content-Type": "application/octet-stream"}
    expect(http(port, "PUT", target, headers=headers, body=data), (201,), "PUT small blob")
    return digest, len(data)


def push_image(port: int, repo: str, tag: str, seed: bytes) -> ImageRef:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench": seed.hex()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        },
        separators=(",", ":"),
    ).encode()
    cfg_digest, cfg_size = push_small_blob(port, repo, config)
    layers = []
    for i in range(3):
        d, s = push_small_blob(port, repo, seed + bytes([i]) + os.urandom(4096))
        layers.append({"mediaType": OCI_LAYER, "digest": d, "size": s})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_size},
            "layers": layers,
            "annotations": {"org.opencontainers.image.title": "stablemirror-bench"},
        },
        indent=2,
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    resp = http(
        port,
        "PUT",
        f"/v2/{repo}/manifests/{tag}",
        headers={"Content-Type": OCI_MANIFEST},
        body=manifest,
    )
    expect(resp, (201,), "PUT manifest")
    ref = ImageRef(repo, tag, digest, manifest)
    for what in (tag, digest):
        got = expect(
            http(port, "GET", f"/v2/{repo}/manifests/{what}", headers={"Accept": ACCEPT_MANIFESTS}),
            (200,),
            f"GET manifest {what}",
        )
        if got.body != manifest:
            raise BenchError(f"GET manifest {what}: body differs from what was pushed")
        if got.header("docker-content-digest") not in ("", digest):
            raise BenchError(f"GET manifest {what}: wrong Docker-Content-Digest")
        if not got.header("content-type").startswith(OCI_MANIFEST):
            raise BenchError(f"GET manifest {what}: Content-Type {got.header('content-type')!r}")
    return ref


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_REQS = re.compile(r"(\d+) requests in")
_WRK_PCT = re.compile(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def warm_wrk(port: int, path: str, threads: int, conns: int, duration: int) -> None:
    """Untimed load so lazy imports, caches and connection pools settle first."""
    url = f"http://{HOST}:{port}{path}"
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "-s", str(LUA_SCRIPT), url]
    subprocess.run(argv, capture_output=True, timeout=duration + 30)


def run_wrk(port: int, path: str, threads: int, conns: int, duration: int) -> dict[str, Any]:
    url = f"http://{HOST}:{port}{path}"
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    out = proc.stdout
    m = _WRK_RPS.search(out)
    if proc.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()} {out[-500:]}")
    m_non2xx = _WRK_NON2XX.search(out)
    non2xx = int(m_non2xx.group(1)) if m_non2xx else 0
    sock = _WRK_SOCKERR.search(out)
    sock_errors = sum(int(x) for x in sock.groups()) if sock else 0
    m_total = _WRK_REQS.search(out)
    total = int(m_total.group(1)) if m_total else 0
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    lat = {f"p{p}": float(v) * scale[u] for p, v, u in _WRK_PCT.findall(out)}
    if non2xx or sock_errors:
        raise BenchError(
            f"wrk saw {non2xx} non-2xx responses and {sock_errors} socket errors "
            f"of {total} requests:\n{out}"
        )
    return {"rps": float(m.group(1)), "requests": total, "latency_ms": lat}


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one measurement did: work units (bytes or requests) and how to record it."""

    units: float = 0.0
    record: Any = field(default=lambda: None)
    timed: bool = True


@dataclass
class Results:
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> server -> v
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    noisy: dict[str, dict[str, int]] = field(default_factory=dict)  # best taken under load
    sample_noisy: dict[str, dict[str, list[bool]]] = field(default_factory=dict)
    recording_noisy: bool = False
    discarded: int = 0  # results thrown away because of other load

    def put(self, metric: str, server: str, value: float) -> None:
        self.values.setdefault(metric, {})[server] = value

    def add(self, metric: str, server: str, value: float) -> None:
        """One round's sample; the reported value is the best of the rounds.  It is flagged
        noisy when the best round was taken while other processes loaded the machine."""
        runs = self.samples.setdefault(metric, {}).setdefault(server, [])
        flags = self.sample_noisy.setdefault(metric, {}).setdefault(server, [])
        runs.append(value)
        flags.append(self.recording_noisy)
        best = max(range(len(runs)), key=runs.__getitem__)
        self.put(metric, server, runs[best])
        if flags[best]:
            self.noisy.setdefault(metric, {})[server] = 1
        else:
            self.noisy.get(metric, {}).pop(server, None)

    def err(self, metric: str, server: str, msg: str) -> None:
        self.errors.setdefault(metric, {})[server] = msg

    def ratio(self, metric: str) -> float | None:
        v = self.values.get(metric, {})
        if v.get(REF) and SM in v:
            return v[SM] / v[REF]
        return None


def run_bench(args: argparse.Namespace, work: Path, servers: dict[str, Server]) -> Results:
    res = Results()
    if args.wait_quiet > 0:
        busy = wait_for_quiet(args.wait_quiet)
        res.extra["busy_before"] = busy
        log(f"other CPU use before the run: {busy:.2f} cores")
    res.extra["load_before"] = loadavg()
    sampler = RssSampler()
    sampler.start()
    cpu_s: dict[str, dict[str, float]] = {}  # phase -> server -> CPU seconds (summed)
    units: dict[str, dict[str, float]] = {}  # phase -> server -> bytes or requests (summed)
    res.extra["cpu_s"] = cpu_s
    res.extra["units"] = units
    foreign: dict[str, dict[str, list[float]]] = {}  # phase -> server -> [cpu s, wall s]
    res.extra["foreign"] = foreign
    deadline = time.monotonic() + args.deadline
    retry_spent: dict[str, float] = {}  # phase -> seconds lost to disturbed results
    order = list(servers)

    def check_deadline() -> None:
        if time.monotonic() > deadline:
            raise BenchError(f"run deadline of {args.deadline}s exceeded")

    def phase(name: str, fn: Any, metric: str | None = None, rnd: int = 0) -> None:
        """Run fn(server, attempt) -> Outcome for each live server, flushing dirty pages
        before each; the server order alternates from one round to the next.  A result taken
        while other processes used more than --max-other-load cores is thrown away and the
        measurement repeated, up to --noisy-retries times; after that it is kept and flagged."""
        for sname in order if rnd % 2 == 0 else order[::-1]:
            srv = servers[sname]
            for attempt in range(args.noisy_retries + 1):
                check_deadline()
                if not srv.alive():
                    if metric:
                        res.err(metric, sname, f"server not running (exit {srv.returncode})")
                    break
                settle()
                sampler.set_phase(name)
                c0 = tree_cpu_seconds(srv.pid)
                t0, sys0, own0 = time.monotonic(), system_busy_seconds(), own_cpu_seconds()
                try:
                    outcome: Outcome = fn(sname, srv, attempt)
                except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
                    msg = f"{type(exc).__name__}: {exc}"
                    log(f"{sname} {name}: FAILED {msg}")
                    if metric:
                        res.err(metric, sname, msg)
                    break
                finally:
                    sampler.set_phase("idle")
                server_cpu = tree_cpu_seconds(srv.pid) - c0 if srv.alive() else 0.0
                wall = time.monotonic() - t0
                # CPU used by anything but this server and this harness (curl, wrk): other
                # work on the machine, the idle server, the kernel's writeback, hypervisor steal
                other = system_busy_seconds() - sys0 - (own_cpu_seconds() - own0) - server_cpu
                load = max(other, 0.0) / wall if wall > 0 else 0.0
                noisy = outcome.timed and load > args.max_other_load
                budget_left = args.retry_budget - retry_spent.get(name, 0.0)
                if noisy and attempt < args.noisy_retries and budget_left > 0:
                    log(
                        f"{sname:13s} {name}: other processes used {load:.2f} cores; "
                        f"discarding this result and measuring again"
                    )
                    res.discarded += 1
                    wait_for_quiet(min(20.0, budget_left), args.max_other_load)
                    retry_spent[name] = retry_spent.get(name, 0.0) + time.monotonic() - t0
                    continue
                res.recording_noisy = noisy
                outcome.record()
                res.recording_noisy = False
                cpu_s.setdefault(name, {}).setdefault(sname, 0.0)
                cpu_s[name][sname] += server_cpu
                units.setdefault(name, {}).setdefault(sname, 0.0)
                units[name][sname] += outcome.units
                if outcome.timed:
                    foreign.setdefault(name, {}).setdefault(sname, [0.0, 0.0])
                    foreign[name][sname][0] += max(other, 0.0)
                    foreign[name][sname][1] += wall
                break

    try:
        for srv in servers.values():
            sampler.set_phase("startup")
            srv.start(sampler, args.startup_timeout)
        sampler.set_phase("idle")
        time.sleep(1.0)
        sampler.sample()
        res.extra["idle_rss_mib"] = {n: sampler.peak_tree_kib.get(n, 0) / 1024 for n in servers}
        res.extra["startup_s"] = {n: s.startup_s for n, s in servers.items()}

        check_deadline()
        size = args.size_mib * MiB
        n_chunked = args.push_rounds if "push" in args.phases else 0
        n_mono = max(n_chunked, 1 if "get" in args.phases else 0)
        log(f"generating {n_mono + n_chunked} random blobs of {args.size_mib} MiB in {work}")
        t0 = time.perf_counter()
        # distinct data for every push, so no push ever hits an already-stored blob
        mono = [make_random_file(work / f"blob-mono-{r}.bin", size) for r in range(n_mono)]
        chunked = [make_random_file(work / f"blob-chunked-{r}.bin", size) for r in range(n_chunked)]
        log(f"test data ready in {time.perf_counter() - t0:.1f}s")
        xfer_timeout = max(120.0, size / 2e6)  # give up below 2 MB/s

        def fresh(blob: Blob, attempt: int, sname: str) -> Blob:
            """The round's blob, or on a retry new data the server has never seen."""
            if attempt == 0:
                return blob
            path = work / f"{blob.path.stem}-retry{attempt}-{sname}.bin"
            return make_random_file(path, blob.size)

        def do_mono(blob: Blob) -> Any:
            def do(sname: str, srv: Server, attempt: int) -> Outcome:
                b = fresh(blob, attempt, sname)
                v = push_monolithic(srv.port, "bench/mono", b, xfer_timeout)
                log(f"{sname:13s} monolithic push: {v:8.1f} MB/s")
                if b is not blob:
                    b.path.unlink()
                return Outcome(b.size, lambda: res.add("push_mono", sname, v))

            return do

        def do_chunked(blob: Blob) -> Any:
            def do(sname: str, srv: Server, attempt: int) -> Outcome:
                b = fresh(blob, attempt, sname)
                v = push_chunked(srv.port, "bench/chunked", b, args.chunk_mib * MiB, xfer_timeout)
                log(f"{sname:13s} chunked push:    {v:8.1f} MB/s ({args.chunk_mib} MiB chunks)")
                if b is not blob:
                    b.path.unlink()
                return Outcome(b.size, lambda: res.add("push_chunked", sname, v))

            return do

        def do_get(sname: str, srv: Server, attempt: int) -> Outcome:
            v = get_blob_curl(srv.port, "bench/mono", mono[0], xfer_timeout)
            log(f"{sname:13s} blob GET:        {v:8.1f} MB/s")
            return Outcome(mono[0].size, lambda: res.add("blob_get", sname, v))

        def do_blob_checks(sname: str, srv: Server, attempt: int) -> Outcome:
            content = verify_blob_get(srv.port, "bench/mono", mono[0], xfer_timeout)
            res.notes.setdefault("content", {})[sname] = content
            rng = range_checks(srv.port, "bench/mono", mono[0])
            res.notes.setdefault("range", {})[sname] = rng
            log(f"{sname:13s} full GET digest check: {content}; Range GET check: {rng}")
            return Outcome(timed=False)

        images: dict[str, ImageRef] = {}

        def do_manifest_push(sname: str, srv: Server, attempt: int) -> Outcome:
            images[sname] = push_image(srv.port, "bench/manifest", "v1", os.urandom(8))
            return Outcome(timed=False)

        def manifest_path(sname: str, kind: str) -> str:
            if sname not in images:
                raise BenchError("no image was pushed")
            img = images[sname]
            return f"/v2/{img.repo}/manifests/{img.tag if kind == 'tag' else img.digest}"

        def do_warmup(sname: str, srv: Server, attempt: int) -> Outcome:
            for kind in ("tag", "digest"):
                path = manifest_path(sname, kind)
                warm_wrk(srv.port, path, args.wrk_threads, args.wrk_conns, args.wrk_warmup)
            return Outcome(timed=False)

        def wrk_by(kind: str) -> Any:
            def do(sname: str, srv: Server, attempt: int) -> Outcome:
                out = run_wrk(
                    srv.port,
                    manifest_path(sname, kind),
                    args.wrk_threads,
                    args.wrk_conns,
                    args.wrk_duration,
                )
                lat = out["latency_ms"]
                log(
                    f"{sname:13s} manifest GET by {kind:6s}: {out['rps']:9.0f} req/s "
                    f"(p50 {lat.get('p50', 0):.2f} ms, p99 {lat.get('p99', 0):.2f} ms)"
                )

                def record() -> None:
                    res.add(f"manifest_{kind}", sname, out["rps"])
                    res.extra.setdefault("wrk", {}).setdefault(kind, {}).setdefault(sname, [])
                    res.extra["wrk"][kind][sname].append(out)

                return Outcome(int(out["requests"]), record)

            return do

        if "push" in args.phases:
            for r in range(args.push_rounds):
                phase("push_mono", do_mono(mono[r]), "push_mono", r)
                phase("push_chunked", do_chunked(chunked[r]), "push_chunked", r)
        elif "get" in args.phases:  # GET still needs one blob on each server
            phase("push_mono", do_mono(mono[0]), "push_mono")
        if "get" in args.phases:
            for r in range(args.get_rounds):
                phase("blob_get", do_get, "blob_get", r)
            phase("blob_checks", do_blob_checks, "blob_get")
        if "manifest" in args.phases:
            phase("manifest_push", do_manifest_push, "manifest_tag")
            if args.wrk_warmup > 0:
                phase("wrk_warmup", do_warmup)
            for r in range(args.wrk_rounds):
                phase("manifest_tag", wrk_by("tag"), "manifest_tag", r)
                phase("manifest_digest", wrk_by("digest"), "manifest_digest", r)
        for sname, srv in servers.items():
            if not srv.alive():
                res.err("peak_rss", sname, f"server died (exit {srv.returncode})")
                log(f"{sname} is no longer running:\n{srv.log_tail()}")
    finally:
        res.extra["load_after"] = loadavg()
        sampler.stop()
        for sname in servers:
            if sname in sampler.peak_tree_kib:
                res.put("peak_rss", sname, sampler.peak_tree_kib[sname] / 1024)
        res.extra["hwm_sum_mib"] = {n: sampler.hwm_sum_kib(n) / 1024 for n in servers}
        res.extra["max_procs"] = dict(sampler.max_procs)
        res.extra["peak_pss_mib"] = {n: kib / 1024 for n, kib in sampler.peak_pss_kib.items()}
        res.extra["phase_rss_mib"] = {
            f"{n}/{p}": kib / 1024 for (n, p), kib in sorted(sampler.peak_phase_kib.items())
        }
    return res


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def fmt_val(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "req/s":
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def target_rows(res: Results) -> list[tuple[str, str, float, float | None, str]]:
    rows = []
    for label, metrics, need in TARGETS:
        for m in metrics:
            r = res.ratio(m)
            mlabel = next(lbl for k, lbl, _, _ in METRICS if k == m)
            verdict = "n/a" if r is None else "PASS" if r >= need else "FAIL"
            rows.append((label, mlabel, need, r, verdict))
    return rows


def table_lines(res: Results, servers: list[str]) -> list[str]:
    head = ["Metric", "Unit", *servers]
    if REF in servers and SM in servers:
        head.append("stablemirror / docker-registry")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for key, label, unit, higher in METRICS:
        row = [label, unit]
        for s in servers:
            err = res.errors.get(key, {}).get(s)
            v = res.values.get(key, {}).get(s)
            cell = "ERROR" if err and v is None else fmt_val(v, unit)
            if res.noisy.get(key, {}).get(s):
                cell += " (noisy)"
            row.append(cell)
        if len(head) > len(row):
            r = res.ratio(key)
            row.append("—" if r is None else f"{r:.2f}x" + ("" if higher else " (lower is better)"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_info() -> dict[str, str]:
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        ref_ver = subprocess.run(
            ["docker-registry", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        ref_ver = "?"
    try:
        wrk_ver = (
            subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
            .stdout.split("Copyright")[0]
            .strip()
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        wrk_ver = "?"
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": cpu or platform.processor() or "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "reference": ref_ver,
        "wrk": wrk_ver,
    }


def command_line() -> str:
    exe = sys.executable
    with contextlib.suppress(ValueError):
        exe = os.path.relpath(exe, REPO_ROOT) if Path(exe).is_relative_to(REPO_ROOT) else exe
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO_ROOT)
    return shlex.join([exe, script, *sys.argv[1:]])


PHASES = [
    # phase, label, unit of work, CPU cost unit
    ("push_mono", "monolithic push", "bytes", "CPU s/GiB"),
    ("push_chunked", "chunked push", "bytes", "CPU s/GiB"),
    ("blob_get", "blob GET", "bytes", "CPU s/GiB"),
    ("manifest_tag", "manifest GET by tag", "requests", "CPU us/req"),
    ("manifest_digest", "manifest GET by digest", "requests", "CPU us/req"),
]


def foreign_load(res: Results, phase: str, server: str) -> float | None:
    cpu_wall = res.extra.get("foreign", {}).get(phase, {}).get(server)
    if not cpu_wall or cpu_wall[1] <= 0:
        return None
    return float(cpu_wall[0] / cpu_wall[1])


def foreign_summary(res: Results) -> str:
    loads = [
        (foreign_load(res, ph, s) or 0.0, ph, s)
        for ph, d in res.extra.get("foreign", {}).items()
        for s in d
    ]
    if not loads:
        return "?"
    worst = max(loads)
    mean = sum(x for x, _, _ in loads) / len(loads)
    return f"mean {mean:.2f} cores, worst {worst[0]:.2f} ({worst[2]} {worst[1]})"


def cpu_cost(res: Results, phase: str, server: str) -> float | None:
    cpu: float | None = res.extra.get("cpu_s", {}).get(phase, {}).get(server)
    done: float | None = res.extra.get("units", {}).get(phase, {}).get(server)
    if cpu is None or not done:
        return None
    unit = next(u for p, _, u, _ in PHASES if p == phase)
    return cpu / (done / (1 << 30)) if unit == "bytes" else cpu / done * 1e6


def report_markdown(
    args: argparse.Namespace,
    res: Results,
    servers: list[str],
    info: dict[str, str],
    started: dt.datetime,
    wall: float,
) -> str:
    mode = "quick" if args.quick else "full"
    out = [
        f"## {mode.capitalize()} run",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z').strip()} (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}, Python {info['python']}",
        f"- Reference: `{info['reference']}` (filesystem storage); load generator: {info['wrk']}",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        (
            "- Server logging: errors only (docker-registry log.level error, access log off; "
            "stablemirror STABLEMIRROR_LOG_LEVEL=error)"
            if args.server_logs == "quiet"
            else "- Server logging: each server's default (info level with access log lines)"
        ),
        f"- Load average before / after the run: {res.extra.get('load_before', '?')} / "
        f"{res.extra.get('load_after', '?')}; CPU used by other processes during the timed "
        f"runs: {foreign_summary(res)}; results discarded and re-measured because other "
        f"processes used more than {args.max_other_load} cores: {res.discarded}"
        + (
            f"; (noisy) marks a figure that was kept after {args.noisy_retries} such retries"
            if res.noisy
            else ""
        ),
        f"- Parameters: blob {args.size_mib} MiB; pushes best of {args.push_rounds} "
        f"(fresh random data each), PATCH chunks {args.chunk_mib} MiB; blob GET best of "
        f"{args.get_rounds}; wrk -t{args.wrk_threads} -c{args.wrk_conns} -d{args.wrk_duration}s "
        f"best of {args.wrk_rounds} (after {args.wrk_warmup}s untimed warm-up per URL); "
        f"server order alternates between rounds; stablemirror --workers {args.workers}"
        + (
            ""
            if args.phases == {"push", "get", "manifest"}
            else f"; phases: {','.join(sorted(args.phases))}"
        ),
        *(
            [f"- Server under test started as: `{args.stablemirror_cmd}`"]
            if args.stablemirror_cmd != SM_COMMAND and SM in servers
            else []
        ),
        "",
        *table_lines(res, servers),
        "",
    ]
    if REF in servers and SM in servers:
        out += [
            "Targets (ratio stablemirror / docker-registry):",
            "",
            "| Target | Metric | Measured | Result |",
            "|---|---|---|---|",
        ]
        for label, mlabel, need, r, verdict in target_rows(res):
            meas = "—" if r is None else f"{r:.2f}x"
            out.append(f"| {label} ≥ {need:.1f}x | {mlabel} | {meas} | {verdict} |")
        out.append("")
    out += ["<details><summary>Details</summary>", ""]
    out += ["All rounds (the table shows the best):", ""]
    for key, label, unit, _ in METRICS:
        for s in servers:
            runs = res.samples.get(key, {}).get(s)
            if runs:
                flags = res.sample_noisy.get(key, {}).get(s, [])
                vals = [
                    fmt_val(x, unit) + (" (noisy)" if i < len(flags) and flags[i] else "")
                    for i, x in enumerate(runs)
                ]
                out.append(f"- {label}, {s}: " + ", ".join(vals) + f" {unit}")
    out.append("")
    for s in servers:
        bits = []
        if s in res.notes.get("content", {}):
            bits.append(f"full GET digest check: {res.notes['content'][s]}")
        if s in res.notes.get("range", {}):
            bits.append(f"Range GET check: {res.notes['range'][s]}")
        for kind in ("tag", "digest"):
            for w in res.extra.get("wrk", {}).get(kind, {}).get(s, []):
                lat = w["latency_ms"]
                bits.append(
                    f"wrk by {kind}: {w['requests']} requests, p50 {lat.get('p50', 0):.2f}"
                    f" ms, p99 {lat.get('p99', 0):.2f} ms"
                )
        bits.append(f"startup {res.extra.get('startup_s', {}).get(s, 0):.2f} s")
        bits.append(f"idle RSS {res.extra.get('idle_rss_mib', {}).get(s, 0):.0f} MiB")
        bits.append(
            f"peak tree PSS (shared pages split between processes) "
            f"{res.extra.get('peak_pss_mib', {}).get(s, 0):.0f} MiB"
        )
        bits.append(
            f"sum of per-process VmHWM {res.extra.get('hwm_sum_mib', {}).get(s, 0):.0f} MiB"
            f" over up to {res.extra.get('max_procs', {}).get(s, 0)} processes"
        )
        out.append(f"- **{s}**: " + "; ".join(bits))
    out += [
        "",
        "Server CPU cost (whole process tree, timed runs only), peak tree RSS, and CPU used by"
        " other processes while that server was measured (in cores, averaged), per phase:",
        "",
        "| Phase | Cost unit | "
        + " | ".join(f"{s} cost | {s} RSS MiB | other load" for s in servers)
        + " |",
        "|---|---|" + "---|---|---|" * len(servers),
    ]
    for ph, label, _, cost_unit in PHASES:
        cells = []
        for s in servers:
            cost = cpu_cost(res, ph, s)
            rss = res.extra.get("phase_rss_mib", {}).get(f"{s}/{ph}")
            other = foreign_load(res, ph, s)
            cells += [
                "—" if cost is None else f"{cost:,.2f}" if cost < 100 else f"{cost:,.0f}",
                "—" if rss is None else f"{rss:.0f}",
                "—" if other is None else f"{other:.2f}",
            ]
        out.append(f"| {label} | {cost_unit} | " + " | ".join(cells) + " |")
    errs = [(m, s, e) for m, d in res.errors.items() for s, e in d.items()]
    if errs:
        out += ["", "Errors:", ""]
        out += [f"- {s} / {m}: `{e.splitlines()[0][:300]}`" for m, s, e in errs]
    out += ["", "</details>", ""]
    return "\n".join(out)


RESULTS_HEADER = """# Benchmark results

Written by `bench/run.py` (see `bench/README.md`). Each section is replaced by the latest
run of that mode; both servers are measured in the same run, on the same machine, with the
same clients. Ratios are stablemirror / docker-registry (higher is better, except RSS).
Throughput is in MB/s = 10^6 bytes per second.
"""


def update_results_file(path: Path, mode: str, section: str) -> None:
    """Replace only this mode's section of RESULTS.md; a new "...full" section goes above
    its "...quick" counterpart (full above quick, mirror-full above mirror-quick)."""
    begin, end = f"<!-- BEGIN {mode} -->", f"<!-- END {mode} -->"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    quick = f"<!-- BEGIN {mode.removesuffix('full')}quick -->"
    if begin in text and end in text:
        pre, _, rest = text.partition(begin)
        _, _, post = rest.partition(end)
        text = pre + block + post
    elif mode.endswith("full") and quick in text:
        pre, _, post = text.partition(quick)
        text = pre + block + "\n\n" + quick + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------------------


def add_output_args(p: argparse.ArgumentParser, results: Path, deadline: float) -> None:
    """Options every benchmark script shares: where results go, and how long it may run."""
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--results", default=str(results), help="markdown file to update")
    p.add_argument("--no-results", action="store_true", help="do not update the results file")
    p.add_argument("--json", help="also write raw results as JSON to this path")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--deadline", type=float, default=deadline, help="abort the run after N s")
    p.add_argument("--fail-on-target", action="store_true", help="exit 1 when a target is missed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="256 MiB blobs and 3 s wrk runs")
    p.add_argument("--only", choices=[REF, SM], help="measure a single server")
    p.add_argument("--size-mib", type=int, help="test blob size (default 1024; quick 256)")
    p.add_argument(
        "--phases",
        default="push,get,manifest",
        help="comma-separated subset of push,get,manifest to run (default: all)",
    )
    p.add_argument("--chunk-mib", type=int, default=64, help="PATCH chunk size (default 64)")
    p.add_argument("--get-rounds", type=int, default=5, help="blob GETs per server (best of)")
    p.add_argument("--wrk-duration", type=int, help="seconds per wrk run (default 10; quick 3)")
    p.add_argument("--push-rounds", type=int, default=2, help="pushes per server (best of)")
    p.add_argument(
        "--wrk-rounds", type=int, help="wrk runs per server and URL, best of (default 3; quick 2)"
    )
    p.add_argument(
        "--wrk-warmup", type=int, default=1, help="untimed wrk seconds per URL before timing"
    )
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--wrk-conns", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="stablemirror --workers")
    p.add_argument(
        "--python",
        default=str(REPO_ROOT / ".venv/bin/python"),
        help="interpreter that runs stablemirror",
    )
    p.add_argument(
        "--stablemirror-cmd",
        default=SM_COMMAND,
        help="command template for the server under test; placeholders {python} {listen} "
        "{data_dir} {workers} (default: %(default)r)",
    )
    p.add_argument("--tmpdir", help="parent of the run's temp dir (default: $TMPDIR or /tmp)")
    p.add_argument(
        "--server-logs",
        choices=["quiet", "default"],
        default="quiet",
        help="quiet: both servers log errors only (default); default: info level and "
        "access logs on both",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="wait up to N s for other CPU use to drop below 0.25 cores before starting",
    )
    p.add_argument(
        "--max-other-load",
        type=float,
        default=0.35,
        help="CPU cores other processes may use during a measurement before it is repeated",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="times a measurement disturbed by other load is repeated (0: never)",
    )
    p.add_argument(
        "--retry-budget",
        type=float,
        default=90.0,
        help="seconds each kind of measurement may lose to disturbed results and re-measuring",
    )
    add_output_args(p, RESULTS_MD, deadline=1800.0)
    args = p.parse_args(argv)
    if args.size_mib is None:
        args.size_mib = 256 if args.quick else 1024
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not args.phases or args.phases - {"push", "get", "manifest"}:
        p.error("--phases takes a comma-separated subset of push,get,manifest")
    if args.wrk_rounds is None:
        args.wrk_rounds = 2 if args.quick else 3
    if args.wrk_duration is None:
        args.wrk_duration = 3 if args.quick else 10
    for name in (
        "size_mib",
        "chunk_mib",
        "get_rounds",
        "wrk_duration",
        "wrk_threads",
        "wrk_conns",
        "workers",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    return args


def tools_present(*tools: str) -> bool:
    """True if every tool is on PATH; otherwise say which is missing and how to get it."""
    missing = [t for t in tools if not shutil.which(t)]
    for tool in missing:
        print(f"error: {tool} not found (apt-get install {tool})", file=sys.stderr)
    return not missing


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not tools_present("curl", "wrk"):
        return 2
    names = [args.only] if args.only else list(SERVERS)
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="stablemirror-bench-", dir=args.tmpdir))
    servers: dict[str, Server] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    res: Results | None = None
    fatal: str | None = None
    try:
        if REF in names:
            servers[REF] = reference_server(work, args.server_logs == "quiet")
        if SM in names:
            servers[SM] = stablemirror_server(
                work, args.python, args.workers, args.stablemirror_cmd, args.server_logs == "quiet"
            )
        res = run_bench(args, work, servers)
    except BenchError as exc:
        fatal = str(exc)
        log(f"FATAL: {exc}")
    except KeyboardInterrupt:
        fatal = "interrupted"
        log("interrupted")
    finally:
        for srv in servers.values():
            srv.stop()
        if args.keep_tmp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - t_start
    if res is None:
        return 2

    info = machine_info()
    print()
    print("\n".join(table_lines(res, names)))
    both = REF in names and SM in names
    rows = target_rows(res) if both else []
    if rows:
        print()
        for label, mlabel, need, r, verdict in rows:
            meas = "n/a" if r is None else f"{r:.2f}x"
            print(f"  target {label:13s} >= {need:.1f}x  {mlabel:32s} {meas:>7s}  {verdict}")
    for m, d in res.errors.items():
        for s, e in d.items():
            print(f"  error: {s} / {m}: {e.splitlines()[0][:300]}")
    print(
        f"  other CPU load during timed runs: {foreign_summary(res)}; "
        f"{res.discarded} disturbed results re-measured"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": started.isoformat(),
                    "machine": info,
                    "command": command_line(),
                    "args": vars(args),
                    "values": res.values,
                    "samples": res.samples,
                    "errors": res.errors,
                    "notes": res.notes,
                    "extra": res.extra,
                    "noisy": res.noisy,
                    "discarded": res.discarded,
                    "ratios": {m: res.ratio(m) for m, *_ in METRICS},
                    "fatal": fatal,
                },
                indent=2,
                default=str,
            )
        )
    if not args.no_results and (both or args.results != str(RESULTS_MD)):
        mode = "quick" if args.quick else "full"
        if args.only:
            mode += f"-{args.only}"
        update_results_file(
            Path(args.results), mode, report_markdown(args, res, names, info, started, wall)
        )
        log(f"updated {args.results} ({mode} section)")
    elif not both:
        log("single-server run: results file not updated (pass --results PATH to write one)")
    if fatal or res.errors:
        return 2
    if args.fail_on_target and any(v == "FAIL" for *_, v in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
