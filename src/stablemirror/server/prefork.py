"""Running the app: one socket, N worker processes (pre-fork), graceful shutdown."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from stablemirror.config import Settings
from stablemirror.metrics import Metrics, prepare_multiprocess_dir
from stablemirror.server.metrics_dir import InstanceMetricsDir
from stablemirror.server.startup import bind, check_data_dir, check_storage, migrate_index
from stablemirror.server.supervisor import (
    SHUTDOWN_TIMEOUT,
    STOP_SIGNALS,
    exec_supervisor,
    log_shutdown_begins,
    log_stopped,
)

if TYPE_CHECKING:
    from aiohttp import web

# The parent of several workers imports neither aiohttp nor the app: each worker imports
# them after the fork, so the parent stays small (docs/footprint.md).
log = logging.getLogger("stablemirror.server")


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
    resume_collector()
    shutdown_began: list[float] = []
    if only:
        async def shutting_down(_app: web.Application) -> None:
            shutdown_began.append(time.monotonic())
            log_shutdown_begins(1)

        app.on_shutdown.insert(0, shutting_down)
    # web.run_app, with the connection guard in front of aiohttp (api/connections.py).
    run_guarded(app, sock, loop, shutdown_timeout=SHUTDOWN_TIMEOUT)
    if only:
        log_stopped(shutdown_began[0] if shutdown_began else time.monotonic())


def resume_collector() -> None:
    """cli/entry.py starts `serve` with the cyclic GC off. What start-up made (modules,
    classes, the app) lives as long as the process, so it goes to the permanent
    generation, where no collection walks it again and a forked worker's pages stay
    shared; a collection first would cost ~0.08 s for ~2,000 objects of garbage."""
    gc.freeze()
    gc.enable()


def _run_forked_worker(settings: Settings, sock: socket.socket, metrics_dir: Path
                       ) -> None:
    code = 0
    try:
        from aiohttp.web_runner import GracefulExit

        # a second SIGTERM while shutting down: still a clean stop
        with contextlib.suppress(GracefulExit):
            _run_worker(settings, sock, metrics_dir)
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


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
    log.info("listening on %s with %d worker(s), role %s, index on %s, data in %s",
             settings.listen, workers, settings.role, settings.index_backend,
             settings.data_dir)
    if workers == 1:
        _run_worker(settings, sock, metrics_dir.path, only=True)
        return
    # Imported once, before the fork: the workers share those pages and the CPU it took,
    # and the exec below drops the parent's copy (server/supervisor.py).
    import uvloop  # noqa: F401

    import stablemirror.compose.app  # noqa: F401

    gc.freeze()  # what the workers inherit stays shared (resume_collector)
    # Blocked until the supervisor handles them (server/supervisor.py); each worker
    # unblocks them before its event loop installs its own handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            _run_forked_worker(settings, sock, metrics_dir.path)
        children.append(pid)
    sock.close()  # the workers' now; the supervisor never accepts
    exec_supervisor(children, metrics_dir.hand_over(), settings.log_level,
                    settings.log_format)
