"""Running the app: one socket, N worker processes (pre-fork), graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from stablemirror.config import Settings
from stablemirror.metrics import Metrics, prepare_multiprocess_dir
from stablemirror.server.metrics_dir import InstanceMetricsDir
from stablemirror.server.startup import bind, check_data_dir, check_storage, migrate_index

log = logging.getLogger("stablemirror.server")
SHUTDOWN_TIMEOUT = 10.0  # seconds requests in flight get to finish after SIGTERM


def _run_worker(settings: Settings, sock: socket.socket, metrics_dir: Path, *,
                only: bool = False) -> None:
    """`only`: the one process (--workers 1), which logs the shutdown itself; with several
    workers the parent logs it once for all. The app is imported here, in the worker:
    a parent of several workers never needs it (docs/footprint.md)."""
    import uvloop

    from stablemirror.compose.app import build_app, run_guarded

    loop = uvloop.new_event_loop()
    # One Metrics per worker process, writing to the shared multiprocess directory.
    metrics = Metrics(multiprocess_dir=metrics_dir)
    app = build_app(settings, metrics)
    shutdown_began: list[float] = []
    if only:
        async def shutting_down(_app: web.Application) -> None:
            shutdown_began.append(time.monotonic())
            _log_shutdown_begins(1)

        app.on_shutdown.insert(0, shutting_down)
    # web.run_app, with the connection guard in front of aiohttp (api/connections.py).
    run_guarded(app, sock, loop, shutdown_timeout=SHUTDOWN_TIMEOUT)
    if only:
        _log_stopped(shutdown_began[0] if shutdown_began else time.monotonic())


def _log_shutdown_begins(workers: int) -> None:
    log.info("shutting down: %d worker(s) finish requests in flight (up to %gs)", workers,
             SHUTDOWN_TIMEOUT)


def _log_stopped(began: float) -> None:
    log.info("stopped: shutdown took %.1fs", time.monotonic() - began)


def serve(settings: Settings) -> None:
    """Validated settings in; then the listen address, the data dir, the index and the
    metrics dir, in this order: a second server on a busy port leaves the data dir alone."""
    sock = bind(settings)
    try:
        check_data_dir(settings, create=True)
        check_storage(settings)
        migrate_index(settings)  # once, before any worker opens the index
        # After the bind, so a server that cannot start leaves a running one's values
        # alone; before forking, and for --workers 1 too, so every worker count exports
        # the same way. Off the data filesystem (metrics_dir.py: a full disk must not
        # SIGBUS the workers through these memory-mapped files).
        metrics_dir = InstanceMetricsDir(settings.data_dir, settings.metrics_dir)
        prepare_multiprocess_dir(metrics_dir.path, clean=False)
        metrics_dir.publish()
    except BaseException:
        sock.close()
        raise
    workers = settings.worker_count
    log.info("listening on %s with %d worker(s), role %s, data in %s", settings.listen,
             workers, settings.role, settings.data_dir)
    if workers == 1:
        _run_worker(settings, sock, metrics_dir.path, only=True)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_worker(settings, sock, metrics_dir.path)
            except GracefulExit:  # a second SIGTERM while shutting down: still a clean stop
                pass
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)

    stopping_since: float | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping_since
        if stopping_since is not None:  # once: a repeated SIGTERM would cut a worker's
            return                      # graceful shutdown short
        stopping_since = time.monotonic()
        _log_shutdown_begins(len(children))
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
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
    _log_stopped(stopping_since if stopping_since is not None else time.monotonic())
    sys.exit(status)
