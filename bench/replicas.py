#!/usr/bin/env python3
"""Manifest GET by tag: two stablemirror replicas on one PostgreSQL vs docker-registry.

    .venv/bin/python bench/replicas.py            # wrk 5 s per round, 2 rounds

Two `serve --workers 1` processes share a throwaway PostgreSQL 15 index (Debian's binaries,
tests/support/postgres.py) and one data dir, as replicas behind a load balancer would; one
wrk per replica (-t1 -c16 each) runs at the same time and their req/s add up. The reference
(docker-registry, filesystem storage) gets one wrk with the same total (-t2 -c32). Best of
the rounds; the ratio goes into bench/RESULTS.md (section "replicas").
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
from typing import Any

from harness.common import REF, REPO_ROOT, RESULTS_MD, log
from harness.results import command_line, machine_info, update_results_file
from harness.servers import docker_registry_server, stablemirror_server
from harness.session import work_dir
from registry_bench.manifests import push_image, run_wrk, warm_wrk

sys.path.insert(0, str(REPO_ROOT))
from tests.support.postgres import PostgresServer

PATH = "/v2/bench/manifest/manifests/v1"


def _parallel_wrk(ports: list[int], threads: int, conns: int, seconds: int) -> float:
    results: list[dict[str, Any]] = []

    def one(port: int) -> None:
        results.append(run_wrk(port, PATH, threads, conns, seconds))

    workers = [threading.Thread(target=one, args=(p,)) for p in ports]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 60)
    if len(results) != len(ports):
        raise RuntimeError("a wrk run failed")
    return sum(float(r["rps"]) for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    started = dt.datetime.now().astimezone()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    pg = PostgresServer()
    pg.start()
    try:
        with work_dir("stablemirror-bench-replicas-", None, False) as work:
            url = pg.url(pg.create_database())
            shared = work / "shared-data"
            shared.mkdir()
            ref = docker_registry_server(work, REF)
            replicas = [stablemirror_server(
                work, f"replica-{n}", sys.executable, 1, data_dir=shared,
                env={"STABLEMIRROR_DATABASE_URL": url, "STABLEMIRROR_REPLICA_ID": n})
                for n in ("a", "b")]
            servers = [ref, *replicas]
            try:
                for s in servers:
                    s.start(None, 60)
                push_image(ref.port, "bench/manifest", "v1", os.urandom(8))
                push_image(replicas[0].port, "bench/manifest", "v1", os.urandom(8))
                for s in servers:
                    warm_wrk(s.port, PATH, 2, 32, 1)
                ref_rps, sm_rps = 0.0, 0.0
                for r in range(args.rounds):
                    ref_now = _parallel_wrk([ref.port], 2, 32, args.seconds)
                    sm_now = _parallel_wrk([p.port for p in replicas], 1, 16, args.seconds)
                    ref_rps, sm_rps = max(ref_rps, ref_now), max(sm_rps, sm_now)
                    log(f"round {r + 1}: reference {ref_now:,.0f} req/s, "
                        f"two replicas {sm_now:,.0f} req/s")
            finally:
                for s in servers:
                    s.stop()
    finally:
        pg.stop()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info = machine_info()
    ratio = sm_rps / ref_rps if ref_rps else 0.0
    section = "\n".join([
        "## Replicas on PostgreSQL: manifest GET by tag", "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, Linux "
        f"{info['kernel']}, Python {info['python']}; reference `{info['reference']}`",
        f"- Command: `{command_line()}`",
        f"- Parameters: two `serve --workers 1` replicas, one PostgreSQL 15 index "
        f"(fsync off, a throwaway server) and one data dir; one wrk -t1 -c16 per replica at "
        f"once vs one wrk -t2 -c32 against docker-registry; {args.seconds} s, best of "
        f"{args.rounds}; server logging: errors only (as bench/run.py)",
        f"- Load average before / after: {load_before} / {load_after} (no quiet-machine "
        "wait, unlike bench/run.py: other work on the machine lowers both columns, "
        "stablemirror's more)", "",
        "| Metric | Unit | reference | two replicas | ratio |",
        "|---|---|---|---|---|",
        f"| Manifest GET by tag | req/s | {ref_rps:,.0f} | {sm_rps:,.0f} | {ratio:.2f}x |", "",
        f"Target ≥ 3.0x: {'PASS' if ratio >= 3.0 else 'FAIL'}", "",
        "Compare with the `quick` section (one server, SQLite, --workers 2): the same request "
        "path without PostgreSQL. Per request the replicas run two PostgreSQL queries "
        "(release channel, manifest) from the event loop (index/pg_reads.py)."])
    update_results_file(RESULTS_MD, "replicas", section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
