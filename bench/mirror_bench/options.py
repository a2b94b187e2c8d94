"""bench/mirror.py's command line (documented in bench/README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.common import REF, SM
from harness.options import (
    add_code_arg,
    add_run_args,
    parse_subset,
    quick_defaults,
    require_positive,
)


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="256 MiB blobs, 2 cold rounds, 3 warm GETs, 8 concurrent clients")
    p.add_argument("--size-mib", type=int, help="blob size (default 1024; quick 256)")
    p.add_argument("--cold-rounds", type=int, help="cold rounds per upstream (3; quick 2)")
    p.add_argument("--warm-rounds", type=int, help="warm GETs per mirror (5; quick 3)")
    p.add_argument("--clients", help="comma-separated concurrent client counts (8,32; quick 8)")
    p.add_argument("--single-rounds", type=int, default=1,
                   help="single cold pulls per mirror in the proxied phases (default 1; more: "
                   "the order rotates, medians are logged, the report keeps the first)")
    p.add_argument("--phases", default="cold,warm,concurrent",
                   help="subset of cold,warm,concurrent (default: all)")
    p.add_argument("--upstreams", default=f"{SM},{REF}",
                   help="upstreams for the cold phase: stablemirror,reference (default both)")
    p.add_argument("--links", default="1250,125",
                   help="extra cold rows with the upstream behind a pacing proxy of these MB/s "
                   "(both the direct pull and the mirror's fetch go through it; default "
                   "1250,125 = about 10 and 1 Gbit/s; empty: none)")
    p.add_argument("--link-upstream", choices=[SM, REF], default=SM,
                   help="the upstream of the paced cold rows (default: stablemirror)")
    p.add_argument("--proxy-upstream", choices=[SM, REF], default=REF,
                   help="the upstream behind both mirrors in the warm and concurrent phases "
                   "(default: reference, i.e. docker-registry)")
    p.add_argument("--client-verify", action="store_true",
                   help="the raw-socket clients of the single and concurrent cold pulls hash "
                   "what they receive (default off, so the clients are not the bottleneck; one "
                   "untimed hashed download per mirror and pull checks the bytes instead)")
    add_code_arg(p)
    p.add_argument("--profile", metavar="DIR",
                   help="after the timed cold rounds, one extra cold pull through each mirror "
                   "under py-spy (raw collapsed stacks per thread) into DIR")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-idle", action="store_true",
                   help="py-spy --idle: also sample threads that wait (off: CPU only)")
    p.add_argument("--steady-page-cache", action="store_true",
                   help="run with the page cache full, as on a host that has run a while: "
                   "pause DAMON pageout daemons, keep a file of all memory but 3 GiB "
                   "(written first, deleted after; harness/pagecache.py)")
    p.add_argument("--notes", help="a file whose text is added under 'Notes:' in RESULTS.md")
    add_run_args(p, retry_budget=120.0, deadline=2400.0)
    args = p.parse_args(argv)
    quick_defaults(args, size_mib=(1024, 256), cold_rounds=(3, 2), warm_rounds=(5, 3),
                   clients=("8,32", "8"))
    try:
        args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        p.error("--clients takes comma-separated integers")
    if any(n < 1 or n > 256 for n in args.clients):
        p.error("--clients: between 1 and 256 each")
    args.clients = [n for n in args.clients if n != 1]  # 1 client is always measured
    args.phases = parse_subset(p, args.phases, "--phases", ("cold", "warm", "concurrent"))
    try:
        args.links = [float(x) for x in args.links.split(",") if x.strip()]
    except ValueError:
        p.error("--links takes comma-separated MB/s figures")
    if any(x <= 0 for x in args.links):
        p.error("--links: positive MB/s figures")
    args.upstreams = [x.strip() for x in args.upstreams.split(",") if x.strip()]
    if not args.upstreams or set(args.upstreams) - {SM, REF}:
        p.error("--upstreams takes stablemirror and/or reference")
    require_positive(p, args, "size_mib", "cold_rounds", "warm_rounds", "workers",
                    "single_rounds")
    args.notes_text = Path(args.notes).read_text() if args.notes else ""
    return args

