#!/usr/bin/env python3
"""Mirror benchmarks (issue 3, "Speed"): stablemirror as a pull-through mirror, side by side.

Run from the repository root:

    .venv/bin/python bench/mirror.py --quick   # 256 MiB blobs, 2 cold rounds, 8 clients
    .venv/bin/python bench/mirror.py           # 1 GiB blobs, 3 cold rounds, 8 and 32 clients

Three measurements, every server on 127.0.0.1 with throw-away storage in one temp dir:

1. cold: a never-seen blob pulled through `stablemirror serve --upstream U` vs. directly
   from U, for U = a stablemirror hosted registry and U = Debian's docker-registry
   (curl: total time and time to first byte);
2. warm: the same blob once cached, stablemirror mirror vs. its peers, docker-registry in
   proxy mode and nginx proxy_cache (issue 17);
3. concurrent cold: 1, N clients pulling one never-seen blob at once through each mirror,
   with a byte-counting proxy (bench/countproxy.py) between each mirror and the upstream.

The measurements live in bench/mirror_bench/, the harness they share with bench/run.py
(servers, pushes, quiet-machine handling) in bench/harness/. Writes its own sections of
bench/RESULTS.md (mirror-full / mirror-quick). See bench/README.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.common import BenchError, MiB, log
from harness.data import BlobPool
from harness.options import tools_present
from harness.pagecache import page_cache_write_rates, steady_page_cache
from harness.procfs import RssSampler
from harness.results import command_line, machine_info, update_results_file
from harness.session import interrupt_on_sigterm, work_dir, write_json
from harness.source import snapshot_code
from harness.timing import NoiseGuard, loadavg, wait_for_quiet
from mirror_bench.bench import TICK_SLACK, Bench
from mirror_bench.clients import sha256_mbps
from mirror_bench.cold import run_cold
from mirror_bench.options import parse_args
from mirror_bench.proxied import run_proxy_phases
from mirror_bench.report import report_markdown
from mirror_bench.targets import print_summary, target_rows


def run_parts(b: Bench) -> None:
    """The phases asked for; one part failing (a server that died, say) does not lose the
    others."""
    args = b.args
    parts: list[tuple[str, Callable[[], None]]] = []
    if "cold" in args.phases:
        parts += [(f"cold {k}", functools.partial(run_cold, b, k)) for k in args.upstreams]
        parts += [(f"cold {x:g} MB/s", functools.partial(run_cold, b, args.link_upstream, x))
                  for x in args.links]
    if args.phases & {"warm", "concurrent"}:
        parts.append(("warm/concurrent", functools.partial(run_proxy_phases, b)))
    for what, part in parts:
        try:
            part()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            msg = f"{what}: {type(exc).__name__}: {exc}"
            b.errors.append(msg)
            log(f"FAILED {msg}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    if not tools_present("curl", "docker-registry", "nginx"):
        return 2
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    interrupt_on_sigterm()
    sampler = RssSampler()
    guard = NoiseGuard(args, sampler, time.monotonic() + args.deadline, tick_slack=TICK_SLACK)
    fatal: str | None = None
    with work_dir("stablemirror-mirror-bench-", args.tmpdir, args.keep_tmp) as work, \
            contextlib.ExitStack() as memory:
        if args.steady_page_cache:
            log("filling the page cache (--steady-page-cache) ...")
            steady = memory.enter_context(steady_page_cache(work))
            log("page cache: {fill_gib:.1f} GiB kept in {fill_s:.0f} s, {damon_paused} DAMON "
                "daemon(s) paused".format(**steady))
        pool = BlobPool(work, args.size_mib * MiB)
        b = Bench(args, work, pool, sampler, guard)
        b.xfer_timeout = max(300.0, args.size_mib * MiB / 2e6)
        if args.steady_page_cache:
            b.data["steady_page_cache"] = steady
        try:
            if args.wait_quiet > 0:
                busy = wait_for_quiet(args.wait_quiet)
                log(f"other CPU use before the run: {busy:.2f} cores")
            b.code_src, b.data["code"] = snapshot_code(args.code, work)
            log(f"stablemirror code: {b.data['code']}")
            b.data["load_before"] = loadavg()
            b.data["sha256_mbps"] = sha256_mbps()
            log(f"SHA-256 (hashlib, one stream): {b.data['sha256_mbps']:,.0f} MB/s")
            b.data["page_cache_before"] = page_cache_write_rates(work, args.size_mib * MiB)
            log("page-cache writes: {fresh_mbps:,.0f} MB/s into pages not used lately, "
                "{reused_mbps:,.0f} MB/s into pages just freed".format(
                    **b.data["page_cache_before"]))
            sampler.start()
            run_parts(b)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            fatal = f"{type(exc).__name__}: {exc}"
            b.errors.append(fatal)
            log(f"FATAL: {fatal}")
        except KeyboardInterrupt:
            fatal = "interrupted"
            log("interrupted")
        finally:
            b.data["load_after"] = loadavg()
            with contextlib.suppress(OSError):  # a full disk ended the run: no probe
                b.data["page_cache_after"] = page_cache_write_rates(work, args.size_mib * MiB)
            sampler.stop()
            pool.remove()
    wall = time.monotonic() - t_start
    info = machine_info()
    print()
    print_summary(b.data, args.clients)
    if args.json:
        write_json(args.json, {
            "date": started.isoformat(), "machine": info, "command": command_line(),
            "args": vars(args), "data": b.data, "discarded": guard.discarded,
            "loads": b.loads, "fatal": fatal})
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
