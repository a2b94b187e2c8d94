#!/usr/bin/env python3
"""What `integrity.verify_on_read` costs: blob GET throughput and server CPU per mode.

    .venv/bin/python bench/verify_on_read.py            # 1 GiB blob, 5 GETs per mode
    .venv/bin/python bench/verify_on_read.py --quick    # 256 MiB blob, 3 GETs per mode

One stablemirror server (--workers 1) at a time on 127.0.0.1, on one throw-away data dir:
the blob is pushed once, then the server is restarted in each mode and the blob fetched
with curl. `never` serves with sendfile(2); `always` hashes every GET; `first` hashes the
first GET after start-up (shown apart as "first GET") and uses sendfile afterwards. The blob
stays in the page cache throughout, so the numbers compare CPU paths, not the disk.
Writes its own section of bench/RESULTS.md (between the verify_on_read markers), or of the
file given with --results.  Servers, data and the results file come from bench/harness/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

from harness.client import expect, http, with_digest
from harness.common import REPO_ROOT, RESULTS_MD, MiB
from harness.data import Blob, make_random_file
from harness.procfs import tree_cpu_seconds
from harness.results import command_line, machine_info, table_head, update_results_file
from harness.servers import Server, stablemirror_server
from harness.session import work_dir
from harness.transfers import get_blob_curl

SECTION = "verify_on_read"
REPO = "bench/verify"
MODES = ("never", "first", "always")
TIMEOUT = 600.0  # seconds for one push or GET


def start_server(work: Path, mode: str) -> Server:
    """stablemirror --workers 1 on the run's one data dir, in that verify_on_read mode."""
    server = stablemirror_server(
        work,
        f"server-{mode}",
        sys.executable,
        1,
        log_level="warning",
        env={"STABLEMIRROR_INTEGRITY__VERIFY_ON_READ": mode},
        data_dir=work / "data",
    )
    try:
        server.start(None, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def push(server: Server, blob: Blob) -> None:
    """Monolithic POST, the body sent from the file with sendfile(2)."""
    target = with_digest(f"/v2/{REPO}/blobs/uploads/", blob.digest)
    headers = {"Content-Type": "application/octet-stream"}
    resp = http(server.port, "POST", target, headers=headers, body_file=blob.path,
                timeout=TIMEOUT)
    expect(resp, (201,), "push")


def warm_up(server: Server, blob: Blob) -> None:
    """Untimed HEADs: a fresh process's first requests open connections and code paths."""
    for _ in range(3):
        expect(http(server.port, "HEAD", f"/v2/{REPO}/blobs/{blob.digest}"), (200,), "HEAD")


def get(server: Server, blob: Blob) -> tuple[float, float]:
    """(MB/s, server CPU seconds) of one full curl GET, checked for size and HTTP 200."""
    cpu = tree_cpu_seconds(server.pid)
    mbps = get_blob_curl(server.port, REPO, blob, TIMEOUT)
    return mbps, tree_cpu_seconds(server.pid) - cpu


def measure(size_mib: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    with work_dir("sm-bench-verify-", None, keep=False) as work:
        blob = make_random_file(work / "blob", size_mib * MiB)
        server = start_server(work, "never")
        try:
            push(server, blob)
            get(server, blob)  # the page cache holds the blob from here on
        finally:
            server.stop()
        results: dict[str, dict[str, list[float]]] = {
            mode: {"mbps": [], "cpu": [], "first_mbps": [], "first_cpu": []} for mode in MODES
        }
        per_gib = size_mib / 1024
        for r in range(rounds):
            # Modes interleaved, their order rotated each round: drift hits all alike.
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                server = start_server(work, mode)
                try:
                    warm_up(server, blob)
                    for i in range(3):  # a fresh process: `first` hashes GET 0 only
                        mbps, cpu = get(server, blob)
                        key = "first_" if mode == "first" and i == 0 else ""
                        results[mode][f"{key}mbps"].append(mbps)
                        results[mode][f"{key}cpu"].append(cpu / per_gib)
                finally:
                    server.stop()
        return results


def render(
    results: dict[str, dict[str, list[float]]], size_mib: int, rounds: int, wall: float
) -> str:
    """The section's text (without its BEGIN/END markers)."""
    info = machine_info()
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
        "## verify_on_read: cost of hashing blobs while serving them",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC (wall time {wall:.0f} s)",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}",
        f"- Command: `cd {REPO_ROOT} && {command_line()}`",
        f"- Parameters: one {size_mib} MiB blob (page-cached), curl full GETs on loopback, "
        f"{rounds} rounds of: per mode a fresh server, 3 untimed HEADs, 3 GETs "
        "(best and median shown); "
        "stablemirror --workers 1",
        "",
        *table_head("Mode", "best MB/s", "median MB/s", "vs never", "server CPU s/GiB (median)"),
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
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB blob, 3 GETs per mode")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    parser.add_argument("--results", default=str(RESULTS_MD), help="markdown file to update")
    args = parser.parse_args()
    size = args.size_mib or (256 if args.quick else 1024)
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.monotonic()
    results = measure(size, rounds)
    section = render(results, size, rounds, time.monotonic() - started)
    print(f"<!-- BEGIN {SECTION} -->\n{section}<!-- END {SECTION} -->\n")
    if not args.no_write:
        update_results_file(Path(args.results), SECTION, section)


if __name__ == "__main__":
    main()
