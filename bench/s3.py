#!/usr/bin/env python3
"""S3 backend benchmark: stablemirror (`storage.backend: s3`) vs. Debian's docker-registry
with its `s3` storage driver (`redirect: disable: true`), both on one SeaweedFS.

    .venv/bin/python bench/s3.py --mib 128 --rounds 3

Each round pushes a fresh random blob to each registry (monolithic: POST + PUT with the
body; and podman's way: POST, one PATCH with the whole body, PUT), then GETs both with curl
(cold: nothing but S3 holds them), the two servers in alternating order. Medians per server
of the throughput and of the server's CPU time per transfer (its process tree), the ratios
in stablemirror's favour when above 1 (MB/s ours / theirs, CPU theirs / ours), and each
server's RSS. The machine is shared: CPU per transfer is the steadier comparison.
Writes the `s3` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import requests
from harness.common import HOST, REF, REPO_ROOT, RESULTS_MD, SM, MiB, log
from harness.data import BlobPool
from harness.procfs import RssSampler, tree_cpu_seconds
from harness.results import command_line, machine_info, table_head, table_row, update_results_file
from harness.servers import Server, free_port, stablemirror_server
from harness.session import interrupt_on_sigterm, work_dir
from harness.transfers import curl_get, push_chunked, push_monolithic, verify_blob_get

sys.path.insert(0, str(REPO_ROOT))
from tests.support.seaweed import SeaweedS3

REF_BUCKET, SM_BUCKET = "bench-reference", "bench-stablemirror"


def reference_on_s3(work: Path, endpoint: str) -> Server:
    exe = "/usr/bin/docker-registry"
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "s3": {"region": "us-east-1", "regionendpoint": endpoint, "bucket": REF_BUCKET,
                   "secure": False, "v4auth": True, "accesskey": "bench",
                   "secretkey": "bench", "rootdirectory": "/registry"},
            "redirect": {"disable": True},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{HOST}:{port}", "secret": os.urandom(16).hex()},
    }
    path = work / "reference-s3.yml"
    path.write_text(json.dumps(config, indent=2))
    # The AWS SDK reads AWS_* from the environment (a CA bundle for http:// panics it).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return Server(REF, port, [exe, "serve", str(path)], work / "reference.log", env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=128, help="blob size (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="stablemirror worker processes")
    ap.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    interrupt_on_sigterm()
    started = dt.datetime.now().astimezone()
    with work_dir("stablemirror-s3-bench-", None, False) as work:
        seaweed = SeaweedS3(work / "seaweed")
        seaweed.start()
        try:
            return run(args, work, seaweed, started)
        finally:
            seaweed.stop()


def run(args: argparse.Namespace, work: Path, seaweed: SeaweedS3, started: dt.datetime) -> int:
    for bucket in (REF_BUCKET, SM_BUCKET):
        requests.put(f"{seaweed.endpoint}/{bucket}", timeout=10)
    sampler = RssSampler()
    sampler.add("seaweedfs", seaweed.proc.pid if seaweed.proc else 0)
    servers = {
        REF: reference_on_s3(work, seaweed.endpoint),
        SM: stablemirror_server(work, SM, sys.executable, args.workers, env={
            "STABLEMIRROR_STORAGE__BACKEND": "s3",
            "STABLEMIRROR_STORAGE__S3__ENDPOINT": seaweed.endpoint,
            "STABLEMIRROR_STORAGE__S3__BUCKET": SM_BUCKET}),
    }
    pool = BlobPool(work, args.mib * MiB)
    results: dict[str, dict[str, list[float]]] = {n: {} for n in servers}
    sampler.start()
    try:
        for s in servers.values():
            s.start(sampler, timeout=60)
        sampler.set_phase("transfers")
        for r in range(args.rounds):
            order = list(servers.items())
            for name, s in order if r % 2 == 0 else order[::-1]:  # neither always first
                def record(metric: str, fn: Callable[[], float], name: str = name,
                           pid: int = s.pid) -> None:
                    c0 = tree_cpu_seconds(pid)
                    results[name].setdefault(f"{metric} MB/s", []).append(fn())
                    cpu = results[name].setdefault(f"{metric}: server CPU s", [])
                    cpu.append(tree_cpu_seconds(pid) - c0)
                repo = f"bench/s3-{uuid.uuid4().hex[:6]}"
                mono, patch = pool.take(name), pool.take(name)
                record("push monolithic",
                       lambda: push_monolithic(s.port, repo, mono, 600))  # noqa: B023
                record("push POST+PATCH+PUT",
                       lambda: push_chunked(s.port, repo, patch, patch.size, 600))  # noqa: B023
                for blob in (mono, patch):
                    record("cold GET",
                           lambda: curl_get(s.port, repo, blob, 600)["mbps"])  # noqa: B023
                if r == 0:
                    verify_blob_get(s.port, repo, patch, 600)
                log(f"round {r + 1} {name}: " + ", ".join(
                    f"{k} {v[-1]:.2f}" for k, v in results[name].items()))
    finally:
        sampler.stop()
        for s in servers.values():
            s.stop()
        pool.remove()
    medians = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in results.items()}
    peak = {n: sampler.peak_tree_kib.get(n, 0) / 1024 for n in (*servers, "seaweedfs")}
    idle = {n: sampler.peak_phase_kib.get((n, "startup"), 0) / 1024 for n in servers}
    busy = {n: sampler.peak_phase_kib.get((n, "transfers"), 0) / 1024 for n in servers}
    lines = ["## S3 backend vs docker-registry's s3 driver (`bench/s3.py`)", "",
             f"`{command_line()}`, {started:%Y-%m-%d %H:%M %Z}; "
             f"{machine_info().get('cpu', '')}; SeaweedFS 4.48 (`weed server -s3`) on "
             f"loopback for both; {args.mib} MiB random blobs, median of {args.rounds} "
             f"rounds; stablemirror with {args.workers} workers; docker-registry 2.8 with "
             "`storage.s3` (path style, v4 auth) and `redirect: disable: true`.", "",
             *table_head("metric", "docker-registry", "stablemirror", "ratio")]
    for metric in medians[SM]:
        ref, sm = medians[REF][metric], medians[SM][metric]
        if metric.endswith("server CPU s"):  # lower is better: ratio reference / ours
            lines.append(table_row(metric, f"{ref:.3f}", f"{sm:.3f}",
                                   f"{ref / sm:.2f}x" if sm else "-"))
        else:
            lines.append(table_row(metric, f"{ref:.0f}", f"{sm:.0f}", f"{sm / ref:.2f}x"))
    lines.append(table_row("RSS after start-up, process tree (MiB)", f"{idle[REF]:.0f}",
                           f"{idle[SM]:.0f}", ""))
    lines.append(table_row("peak RSS during the transfers (MiB)", f"{busy[REF]:.0f}",
                           f"{busy[SM]:.0f}", ""))
    lines.append(table_row("growth per transfer (MiB)", f"{busy[REF] - idle[REF]:.0f}",
                           f"{busy[SM] - idle[SM]:.0f}", ""))
    lines += ["", f"SeaweedFS peak RSS: {peak['seaweedfs']:.0f} MiB. RSS is sampled every "
              "0.1 s per server process tree (stablemirror: parent + workers); transfers "
              "run one at a time; stablemirror's growth includes each worker's S3 client, "
              "made on first use (botocore's service model), and per transfer at most one "
              "part being sent, one being filled and one 1 MiB piece."]
    text = "\n".join(lines)
    print(text)
    if not args.no_results:
        update_results_file(RESULTS_MD, "s3", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
