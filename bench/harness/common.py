"""Names every part of the harness uses: paths, server names, the error type, the log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"

MiB = 1 << 20
HOST = "127.0.0.1"
REF = "reference"  # docker-registry
SM = "stablemirror"


class BenchError(Exception):
    """A measurement or a server failed; the run records it and goes on where it can."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
