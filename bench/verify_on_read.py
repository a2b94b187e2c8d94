#!/usr/bin/env python3
"""What `integrity.verify_on_read` costs: blob GET throughput and server CPU per mode.

    .venv/bin/python bench/verify_on_read.py            # 1 GiB blob, 5 GETs per mode
    .venv/bin/python bench/verify_on_read.py --quick    # 256 MiB blob, 3 GETs per mode

One stablemirror server (--workers 1) at a time on 127.0.0.1, on one throw-away data dir:
the blob is pushed once, then the server is restarted in each mode and the blob fetched
with curl. `never` serves with sendfile(2); `always` hashes every GET; `first` hashes the
first GET after start-up (shown apart as "first GET") and uses sendfile afterwards. The blob
stays in the page cache throughout, so the numbers compare CPU paths, not the disk.
Writes its own section of bench/RESULTS.md (between the verify_on_read markers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
BEGIN, END = "<!-- BEGIN verify_on_read -->", "<!-- END verify_on_read -->"
MiB = 1 << 20
MODES = ("never", "first", "always")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, mode: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "STABLEMIRROR_INTEGRITY__VERIFY_ON_READ": mode,
            "STABLEMIRROR_LOG_LEVEL": "warning",
        }
        self.log = open(data_dir.parent / f"server-{mode}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stablemirror",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(data_dir),
                "--workers",
                "1",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v2/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (one worker: the process itself)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(15)
        self.log.close()


def push(url: str, path: Path, digest: str) -> None:
    """Monolithic POST, streamed from the file (curl would load 1 GiB into memory)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        with path.open("rb") as f:
            conn.request("POST", f"/v2/bench/verify/blobs/uploads/?digest={digest}", body=f,
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(path.stat().st_size)})
        status = conn.getresponse().status
    finally:
        conn.close()
    if status != 201:
        raise RuntimeError(f"push failed: HTTP {status}")


def warm_up(server: Server, digest: str) -> None:
    """Untimed HEADs: a fresh process's first requests open connections and code paths."""
    for _ in range(3):
        subprocess.run(
            ["curl", "-s", "-I", "-o", "/dev/null", f"{server.url}/v2/bench/verify/blobs/{digest}"],
            check=True,
        )


def get(server: Server, digest: str, size: int) -> tuple[float, float]:
    """(MB/s, server CPU seconds) of one full GET, checked for size and HTTP 200."""
    cpu = server.cpu_seconds()
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{time_total}",
            f"{server.url}/v2/bench/verify/blobs/{digest}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out[0] != "200" or int(out[1]) != size:
        raise RuntimeError(f"GET failed: {out}")
    return size / float(out[2]) / 1e6, server.cpu_seconds() - cpu


def measure(size_mib: int, rounds: int) -> tuple[dict[str, dict[str, list[float]]], str]:
    work = Path(tempfile.mkdtemp(prefix="sm-bench-verify-"))
    try:
        data_dir = work / "data"
        blob = work / "blob"
        h = hashlib.sha256()
        with blob.open("wb") as f:
            for _ in range(size_mib):
                chunk = os.urandom(MiB)
                h.update(chunk)
                f.write(chunk)
        digest = "sha256:" + h.hexdigest()
        server = Server(data_dir, "never")
        try:
            push(server.url, blob, digest)
            get(server, digest, size_mib * MiB)  # the page cache holds the blob from here on
        finally:
            server.stop()
        results = {
            mode: {"mbps": [], "cpu": [], "first_mbps": [], "first_cpu": []} for mode in MODES
        }
        per_gib = size_mib / 1024
        for r in range(rounds):
            # Modes interleaved, their order rotated each round: drift hits all alike.
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                server = Server(data_dir, mode)
                try:
                    warm_up(server, digest)
                    for i in range(3):  # a fresh process: `first` hashes GET 0 only
                        mbps, cpu = get(server, digest, size_mib * MiB)
                        key = "first_" if mode == "first" and i == 0 else ""
                        results[mode][f"{key}mbps"].append(mbps)
                        results[mode][f"{key}cpu"].append(cpu / per_gib)
                finally:
                    server.stop()
        return results, digest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render(
    results: dict[str, dict[str, list[float]]],
    size_mib: int,
    rounds: int,
    wall: float,
    command: str,
) -> str:
    never = max(results["never"]["mbps"])
    rows = [
        ("never (sendfile)", results["never"]["mbps"], results["never"]["cpu"]),
        (
            "first: first GET after start (hashed)",
            results["first"]["first_mbps"],
            results["first"]["first_cpu"],
        ),
        ("first: later GETs (sendfile)", results["first"]["mbps"], results["first"]["cpu"]),
        ("always (hashed)", results["always"]["mbps"], results["always"]["cpu"]),
    ]
    lines = [
        BEGIN,
        "## verify_on_read: cost of hashing blobs while serving them",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC (wall time {wall:.0f} s)",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- Command: `{command}`",
        f"- Parameters: one {size_mib} MiB blob (page-cached), curl full GETs on loopback, "
        f"{rounds} rounds of: per mode a fresh server, 3 untimed HEADs, 3 GETs "
        "(best and median shown); "
        "stablemirror --workers 1",
        "",
        "| Mode | best MB/s | median MB/s | vs never | server CPU s/GiB (median) |",
        "|---|---|---|---|---|",
    ]
    for name, mbps, cpu in rows:
        lines.append(
            f"| {name} | {max(mbps):,.0f} | {statistics.median(mbps):,.0f} | "
            f"{max(mbps) / never:.2f}x | {statistics.median(cpu):.2f} |"
        )
    lines += [
        "",
        "Hashed reads run read + SHA-256 in a worker thread per 1 MiB chunk and "
        "hold the last chunk back until the digest checked out; `never` is "
        "zero-copy sendfile. `first` pays the hashed rate once per blob per process "
        "(and again after scrub found corruption anywhere).",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
    text = (
        pattern.sub(lambda _m: section, text)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n\n" + section)
    )
    RESULTS_MD.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB blob, 3 GETs per mode")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    args = parser.parse_args()
    size = args.size_mib or (256 if args.quick else 1024)
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.monotonic()
    results, _digest = measure(size, rounds)
    command = (
        "cd "
        + str(REPO_ROOT)
        + " && .venv/bin/python bench/verify_on_read.py "
        + " ".join(sys.argv[1:])
    )
    section = render(results, size, rounds, time.monotonic() - started, command.strip())
    print(section)
    if not args.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
