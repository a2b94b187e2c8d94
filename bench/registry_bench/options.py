"""bench/run.py's command line (documented in bench/README.md)."""

from __future__ import annotations

import argparse

from harness.common import REF, SM
from harness.options import add_run_args, parse_subset, quick_defaults, require_positive
from harness.servers import SM_COMMAND


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
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
    p.add_argument(
        "--stablemirror-cmd",
        default=SM_COMMAND,
        help="command template for the server under test; placeholders {python} {listen} "
        "{data_dir} {workers} (default: %(default)r)",
    )
    p.add_argument(
        "--server-logs",
        choices=["quiet", "default"],
        default="quiet",
        help="quiet: both servers log errors only (default); default: info level and "
        "access logs on both",
    )
    p.add_argument(
        "--no-nginx",
        dest="nginx",
        action="store_false",
        help="leave out nginx serving the blob file by sendfile (the blob GET's physical limit)",
    )
    add_run_args(p, retry_budget=90.0, deadline=1800.0)
    args = p.parse_args(argv)
    quick_defaults(args, size_mib=(1024, 256), wrk_rounds=(3, 2), wrk_duration=(10, 3))
    args.phases = parse_subset(p, args.phases, "--phases", ("push", "get", "manifest"))
    require_positive(
        p, args, "size_mib", "chunk_mib", "get_rounds", "wrk_duration", "wrk_threads",
        "wrk_conns", "workers",
    )
    return args


