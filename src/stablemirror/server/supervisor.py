"""The parent of several workers, once they are forked: it forwards SIGTERM/SIGINT to them,
waits for them, stops the rest when one leaves, and logs the shutdown once for all.

It does nothing else, so it need not hold what the parent imported to get there (the
settings' pydantic, ~36 MiB of the center's total): server/prefork.py exec()s this module
in a fresh interpreter (`python -S`, the stdlib and this package only, ~12 MiB), keeping
its pid, its children and the metrics directory's lock (docs/footprint.md). The stop
signals are blocked from before the first fork until the handlers here are installed
(signal masks and pending signals survive the exec), so none is lost in between.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

import stablemirror
from stablemirror.logs import configure_logging
from stablemirror.server.metrics_dir import remove_instance_dir

log = logging.getLogger("stablemirror.server")
SHUTDOWN_TIMEOUT = 10.0  # seconds requests in flight get to finish after SIGTERM
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def log_shutdown_begins(workers: int) -> None:
    log.info("shutting down: %d worker(s) finish requests in flight (up to %gs)", workers,
             SHUTDOWN_TIMEOUT)


def log_stopped(began: float) -> None:
    log.info("stopped: shutdown took %.1fs", time.monotonic() - began)


def supervise(children: list[int]) -> int:
    """Until every child has exited; the exit status of the whole server."""
    stopping_since: float | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping_since
        if stopping_since is not None:  # once: a repeated SIGTERM would cut a worker's
            return                      # graceful shutdown short
        stopping_since = time.monotonic()
        log_shutdown_begins(len(children))
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a pending one runs forward now
    status = 0
    for _ in children:
        pid, code = os.wait()
        exit_code = os.waitstatus_to_exitcode(code)
        if exit_code < 0:  # killed by a signal (SIGBUS, OOM kill...): never a clean exit
            log.error("worker %d killed by %s", pid, signal.Signals(-exit_code).name)
            exit_code = 128 - exit_code
        elif exit_code > 0 or stopping_since is None:
            log.error("worker %d exited with status %d", pid, exit_code)
            exit_code = exit_code or 1  # a worker leaving unasked is a failure too
        status = status or exit_code
        forward(signal.SIGTERM, None)  # one worker gone: stop the rest, let a supervisor restart
    log_stopped(stopping_since if stopping_since is not None else time.monotonic())
    return status


def exec_supervisor(children: list[int], metrics: tuple[Path, Path, int], log_level: str,
                    log_format: str) -> NoReturn:
    """Become this module's main() in a fresh interpreter; supervised in this process if
    the exec fails."""
    path, pointer, lock_fd = metrics
    argv = [sys.executable, "-S", "-m", __name__, "--log-level", log_level,
            "--log-format", log_format, "--metrics-dir", str(path), "--pointer", str(pointer),
            "--lock-fd", str(lock_fd), *(str(c) for c in children)]
    # -S: no site-packages; this package's own directory is all it imports besides stdlib
    root = str(Path(stablemirror.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if not sys.executable:
            raise OSError("no interpreter path to exec")
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        log.warning("supervising in the parent process (exec failed: %s)", exc)
    _supervise_and_exit(children, path, pointer, lock_fd)


def _supervise_and_exit(children: list[int], path: Path, pointer: Path, lock_fd: int
                        ) -> NoReturn:
    status = supervise(children)
    remove_instance_dir(path, pointer, lock_fd)
    logging.shutdown()
    sys.exit(status)


def main(argv: list[str] | None = None) -> NoReturn:
    p = argparse.ArgumentParser(prog="stablemirror-supervisor")
    p.add_argument("--log-level", required=True)
    p.add_argument("--log-format", choices=("text", "json"), required=True)
    p.add_argument("--metrics-dir", type=Path, required=True)
    p.add_argument("--pointer", type=Path, required=True)
    p.add_argument("--lock-fd", type=int, required=True)
    p.add_argument("children", type=int, nargs="+")
    args = p.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    _supervise_and_exit(args.children, args.metrics_dir, args.pointer, args.lock_fd)


if __name__ == "__main__":
    main()
