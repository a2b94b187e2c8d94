#!/usr/bin/env python3
"""Side-by-side benchmark: stablemirror vs. the reference registry (CNCF docker-registry 2.8).

Run from the repository root:

    .venv/bin/python bench/run.py            # full run: 1 GiB blobs, wrk 10 s
    .venv/bin/python bench/run.py --quick    # 256 MiB blobs, wrk 3 s
    .venv/bin/python bench/run.py --only reference   # develop against docker-registry alone

Both servers are started on 127.0.0.1 with throw-away storage in a temp dir, measured in
the same run with the same clients, then stopped; the temp dir is removed.  See
bench/README.md for what each metric means.  Only the standard library, curl and wrk are
used on the client side.  The measurements live in bench/registry_bench/, the harness they
share with the other benchmarks in bench/harness/.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

from harness.common import REF, RESULTS_MD, SM, BenchError, log
from harness.options import tools_present
from harness.results import command_line, machine_info, update_results_file
from harness.servers import Server, docker_registry_server, stablemirror_server
from harness.session import interrupt_on_sigterm, work_dir, write_json
from registry_bench.measure import RegistryRun, Results
from registry_bench.options import parse_args
from registry_bench.report import (
    METRICS,
    foreign_summary,
    report_markdown,
    table_lines,
    target_rows,
)

SERVERS = (REF, SM)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    if not tools_present("curl", "wrk", *(["nginx"] if args.nginx else [])):
        return 2
    names = [args.only] if args.only else list(SERVERS)
    started = dt.datetime.now().astimezone()
    t_start = time.monotonic()
    interrupt_on_sigterm()
    servers: dict[str, Server] = {}
    res: Results | None = None
    fatal: str | None = None
    quiet = args.server_logs == "quiet"
    with work_dir("stablemirror-bench-", args.tmpdir, args.keep_tmp) as work:
        try:
            if REF in names:
                servers[REF] = docker_registry_server(work, REF, quiet)
            if SM in names:
                servers[SM] = stablemirror_server(
                    work,
                    SM,
                    args.python,
                    args.workers,
                    template=args.stablemirror_cmd,
                    log_level="error" if quiet else None,
                )
            res = RegistryRun(args, work, servers).run()
        except BenchError as exc:
            fatal = str(exc)
            log(f"FATAL: {exc}")
        except KeyboardInterrupt:
            fatal = "interrupted"
            log("interrupted")
        finally:
            for srv in servers.values():
                srv.stop()
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
        for target, mlabel, _, r, verdict in rows:
            meas = "n/a" if r is None else f"{r:.2f}x"
            print(f"  target {target.replace('≥', '>='):23s}  {mlabel:32s} {meas:>7s}  {verdict}")
    for m, d in res.errors.items():
        for s, e in d.items():
            print(f"  error: {s} / {m}: {e.splitlines()[0][:300]}")
    print(
        f"  other CPU load during timed runs: {foreign_summary(res)}; "
        f"{res.discarded} disturbed results re-measured"
    )
    if args.json:
        write_json(
            args.json,
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
        )
    if not args.no_results and (both or args.results != str(RESULTS_MD)):
        mode = "quick" if args.quick else "full"
        if args.only:
            mode += f"-{args.only}"
        section = report_markdown(args, res, names, info, started, wall)
        update_results_file(Path(args.results), mode, section)
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
