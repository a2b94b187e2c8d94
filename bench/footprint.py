#!/usr/bin/env python3
"""Footprint (issue 17): idle memory and start-up time of each placement, side by side.

Run from the repository root:

    .venv/bin/python bench/footprint.py           # 5 rounds, 1 GiB streaming blob
    .venv/bin/python bench/footprint.py --quick   # 3 rounds, 256 MiB

Per round, each of `stablemirror serve --role node --workers 1 --upstream URL` (a node),
`stablemirror serve --workers 2` (a center) and docker-registry is started afresh: the time
from its start until `GET /v2/` answers 200, the idle RSS/PSS of its process tree, and the
tree's peak RSS above idle while one GET streams a large blob.  Writes the `footprint`
section of bench/RESULTS.md (see bench/README.md).
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

from footprint_bench.measure import FootprintRun
from footprint_bench.report import report_markdown, summary_lines, target_rows
from harness.common import BenchError, log
from harness.options import (
    add_code_arg,
    add_run_args,
    quick_defaults,
    require_positive,
    tools_present,
)
from harness.procfs import RssSampler
from harness.results import machine_info, update_results_file
from harness.session import interrupt_on_sigterm, work_dir, write_json
from harness.source import snapshot_code
from harness.timing import NoiseGuard, wait_for_quiet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 rounds, 256 MiB streaming blob")
    p.add_argument("--rounds", type=int, help="start-ups per placement (default 5; quick 3)")
    p.add_argument("--size-mib", type=int, help="streaming blob size (default 1024; quick 256)")
    p.add_argument("--idle-wait", type=float, default=2.0,
                   help="seconds after /v2/ answers before the idle memory is read")
    add_code_arg(p)
    add_run_args(p, retry_budget=0.0, deadline=1800.0)
    args = p.parse_args(argv)
    quick_defaults(args, rounds=(5, 3), size_mib=(1024, 256))
    require_positive(p, args, "rounds", "size_mib", "workers")
    return args


def byte_compile(code_src: Path | None) -> str:
    """Compile the servers' copy of src/ to .pyc first, as `pip install` does for a node:
    with PYTHONDONTWRITEBYTECODE set (as in this project's shells) an uncompiled copy
    would compile every module at every start, ~0.3 s of CPU that no installed server
    spends (docs/footprint.md)."""
    if code_src is None:
        return " (not byte-compiled: `--code live` runs src/ as it is)"
    if not compileall.compile_dir(str(code_src), quiet=1, workers=1):
        raise BenchError(f"byte-compiling {code_src} failed")
    return ", byte-compiled (.pyc, as pip install does)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not tools_present("curl", "docker-registry"):
        return 2
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    interrupt_on_sigterm()
    sampler = RssSampler(interval=0.05)
    guard = NoiseGuard(args, sampler, time.monotonic() + args.deadline)
    fatal: str | None = None
    with work_dir("stablemirror-footprint-", args.tmpdir, args.keep_tmp) as work:
        run = FootprintRun(args, work, sampler, guard)
        try:
            if args.wait_quiet > 0:
                log(f"other CPU use before the run: {wait_for_quiet(args.wait_quiet):.2f} cores")
            run.code_src, run.code_line = snapshot_code(args.code, work)
            run.code_line += byte_compile(run.code_src)
            sampler.start()
            run.run()
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            fatal = f"{type(exc).__name__}: {exc}"
            log(f"FATAL: {fatal}")
        except KeyboardInterrupt:
            fatal = "interrupted"
            log("interrupted")
        finally:
            sampler.stop()
    wall = time.monotonic() - t_start
    print()
    print("\n".join(summary_lines(run.rounds, args)))
    for target, measured, result in target_rows(run.rounds, args):
        print(f"  {result:4s}  {target}: {measured}")
    if args.json:
        write_json(args.json, {"date": started.isoformat(), "args": vars(args),
                               "rounds": run.rounds, "errors": run.errors, "fatal": fatal})
    if not args.no_results and fatal != "interrupted":
        section = report_markdown(run, machine_info(), started, wall, fatal)
        update_results_file(Path(args.results), "footprint", section)
        log(f"updated {args.results} (footprint section)")
    if fatal or run.errors:
        return 2
    if args.fail_on_target and any(v == "FAIL" for *_, v in target_rows(run.rounds, args)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
