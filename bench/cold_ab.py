#!/usr/bin/env python3
"""Two stablemirror mirrors of one upstream, each running its own copy of src/, pulling the
same fresh 1 GiB blobs cold (one client, order alternating): an A/B of a change to the
cold-pull pipeline in one run, on a machine that other work disturbs.

    cp -r src /tmp/src-b && <edit /tmp/src-b>   # e.g. PartWriter(splice=False) by default
    .venv/bin/python bench/cold_ab.py --rounds 4 --upstream reference --b-src /tmp/src-b

Prints each pull (wall, the mirror's CPU, how busy the machine was) and the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from harness.common import MiB
from harness.data import BlobPool
from harness.procfs import RssSampler, tree_cpu_seconds
from harness.servers import Server, docker_registry_server, stablemirror_server
from harness.transfers import push_monolithic
from mirror_bench.clients import concurrent_pulls, warm_up
from mirror_bench.targets import REPO


def _busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--upstream", choices=["reference", "stablemirror"], default="reference")
    p.add_argument("--b-src", required=True, help="the src/ copy mirror B runs")
    p.add_argument("--python", default=".venv/bin/python")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cold-ab-"))
    sampler = RssSampler()
    up = (docker_registry_server(work, "up") if args.upstream == "reference"
          else stablemirror_server(work, "up", args.python, 1))
    mirrors: dict[str, Server] = {}
    try:
        up.start(sampler, 60)
        url = f"http://127.0.0.1:{up.port}"
        for name, src in (("A", Path("src").resolve()), ("B", Path(args.b_src).resolve())):
            mirrors[name] = stablemirror_server(work, f"mirror-{name}", args.python, 2,
                                                upstream=url, code_src=src)
            mirrors[name].start(sampler, 60)
        warm_up(up.port, [m.port for m in mirrors.values()])
        pool = BlobPool(work, args.size_mib * MiB)
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in mirrors}
        for r in range(args.rounds):
            blob = pool.take("ab")
            push_monolithic(up.port, REPO, blob, 600)
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                os.sync()
                time.sleep(0.5)
                cpu0, busy0 = tree_cpu_seconds(mirrors[name].pid), _busy()
                out = concurrent_pulls(mirrors[name].port, blob, 1, 600, False)
                cpu1, busy1 = tree_cpu_seconds(mirrors[name].pid), _busy()
                cores = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * os.cpu_count()
                rows[name].append((out["wall"], cpu1 - cpu0))
                print(f"round {r} {name}: wall {out['wall']:.2f}s, {out['ok']}/1 correct, mirror "
                      f"CPU {cpu1 - cpu0:.2f}s, machine busy {cores:.2f} cores", flush=True)
        for name, got in rows.items():
            print(f"{name}: median wall {statistics.median(w for w, _ in got):.2f}s, median "
                  f"mirror CPU {statistics.median(c for _, c in got):.2f}s; walls "
                  + ", ".join(f"{w:.2f}" for w, _ in got))
    finally:
        for m in mirrors.values():
            m.stop()
        up.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
