"""What every benchmark run does around its measurements: a temp dir that is removed at the
end (unless kept), SIGTERM turned into an interrupt so that every server is stopped, and the
raw numbers written as JSON."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.common import log


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so the run's `finally` blocks stop the servers."""

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)


@contextlib.contextmanager
def work_dir(prefix: str, parent: str | None, keep: bool) -> Iterator[Path]:
    """A fresh temp dir under `parent` (default $TMPDIR or /tmp), removed afterwards unless
    `keep` (--keep-tmp: server logs, configs and data for a post-mortem)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def write_json(path: str, doc: dict[str, Any]) -> None:
    """The raw results (--json): sets as sorted lists, anything else unknown as text."""

    def plain(value: Any) -> Any:
        if isinstance(value, set):
            return sorted(value)
        return str(value)

    Path(path).write_text(json.dumps(doc, indent=2, default=plain))
