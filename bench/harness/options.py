"""Command-line options the benchmark scripts share, and checks of what they were given."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from harness.common import REPO_ROOT, RESULTS_MD


def add_server_args(p: argparse.ArgumentParser) -> None:
    """How stablemirror is run, and where the run's temp dir goes."""
    p.add_argument("--workers", type=int, default=2, help="stablemirror --workers")
    p.add_argument(
        "--python",
        default=str(REPO_ROOT / ".venv/bin/python"),
        help="interpreter that runs stablemirror",
    )
    p.add_argument("--tmpdir", help="parent of the run's temp dir (default: $TMPDIR or /tmp)")


def add_quiet_machine_args(p: argparse.ArgumentParser, retry_budget: float) -> None:
    """The rules for measuring on a machine that other processes use (see harness.timing)."""
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="wait up to N s for other CPU use to drop below 0.25 cores before starting",
    )
    p.add_argument(
        "--max-other-load",
        type=float,
        default=0.35,
        help="CPU cores other processes may use during a measurement before it is repeated",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="times a measurement disturbed by other load is repeated (0: never)",
    )
    p.add_argument(
        "--retry-budget",
        type=float,
        default=retry_budget,
        help="seconds each kind of measurement may lose to disturbed results and re-measuring",
    )


def add_output_args(p: argparse.ArgumentParser, results: Path, deadline: float) -> None:
    """Options every benchmark script shares: where results go, and how long it may run."""
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--results", default=str(results), help="markdown file to update")
    p.add_argument("--no-results", action="store_true", help="do not update the results file")
    p.add_argument("--json", help="also write raw results as JSON to this path")
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--deadline", type=float, default=deadline, help="abort the run after N s")
    p.add_argument("--fail-on-target", action="store_true", help="exit 1 when a target is missed")


def add_run_args(p: argparse.ArgumentParser, *, retry_budget: float, deadline: float) -> None:
    """Everything a side-by-side benchmark shares: how stablemirror runs, the quiet-machine
    rules (with this --retry-budget default), where results go and the --deadline default."""
    add_server_args(p)
    add_quiet_machine_args(p, retry_budget)
    add_output_args(p, RESULTS_MD, deadline)


def add_code_arg(p: argparse.ArgumentParser) -> None:
    """--code: which stablemirror source the servers run (harness.source.snapshot_code)."""
    p.add_argument("--code", choices=["worktree", "HEAD", "live"], default="worktree",
                   help="the stablemirror source the servers run: worktree = a copy of src/ "
                   "taken at the start (edits during the run cannot mix versions; default), "
                   "HEAD = the last commit's src/, live = src/ as on disk at each server start")


def quick_defaults(args: argparse.Namespace, **defaults: tuple[Any, Any]) -> None:
    """Options left unset get their (full run, --quick run) default."""
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def parse_subset(
    p: argparse.ArgumentParser, value: str, option: str, allowed: tuple[str, ...]
) -> set[str]:
    """A comma-separated, non-empty subset of `allowed`, or an argparse error."""
    chosen = {x.strip() for x in value.split(",") if x.strip()}
    if not chosen or chosen - set(allowed):
        p.error(f"{option} takes a comma-separated subset of {','.join(allowed)}")
    return chosen


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")


def tools_present(*tools: str) -> bool:
    """True if every tool is on PATH; otherwise say which is missing and how to get it."""
    missing = [t for t in tools if not shutil.which(t)]
    for tool in missing:
        print(f"error: {tool} not found (apt-get install {tool})", file=sys.stderr)
    return not missing
