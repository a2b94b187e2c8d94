"""Running the app: one socket, N worker processes (pre-fork), graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvloop
from aiohttp.web_runner import GracefulExit

from stablemirror.app import build_app, run_guarded
from stablemirror.config import Settings
from stablemirror.index.migrate import upgrade
from stablemirror.metrics import Metrics, prepare_multiprocess_dir
from stablemirror.metrics_dir import InstanceMetricsDir

log = logging.getLogger("stablemirror.server")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _run_worker(settings: Settings, sock: socket.socket, metrics_dir: Path) -> None:
    loop = uvloop.new_event_loop()
    # One Metrics per worker process, writing to the shared multiprocess directory.
    metrics = Metrics(multiprocess_dir=metrics_dir)
    # web.run_app, with the connection guard in front of aiohttp (api/connections.py).
    run_guarded(build_app(settings, metrics), sock, loop, shutdown_timeout=10)


def serve(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.index_url)  # once, before any worker opens the index
    sock = _bind(*settings.host_port)
    # After the bind, so a server that cannot start leaves a running one's values alone;
    # before forking, and for --workers 1 too, so every worker count exports the same way.
    metrics_dir = InstanceMetricsDir(settings.data_dir, settings.metrics_dir)
    prepare_multiprocess_dir(metrics_dir.path, clean=False)
    metrics_dir.publish()
    workers = settings.worker_count
    log.info("listening on %s with %d worker(s), data in %s", settings.listen, workers,
             settings.data_dir)
    if workers == 1:
        _run_worker(settings, sock, metrics_dir.path)
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

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:  # once: a repeated SIGTERM would cut a worker's graceful shutdown short
            return
        stopping = True
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
        elif exit_code > 0 or not stopping:
            log.error("worker %d exited with status %d", pid, exit_code)
            exit_code = exit_code or 1  # a worker leaving unasked is a failure too
        status = status or exit_code
        forward(signal.SIGTERM, None)  # one worker gone: stop the rest, let a supervisor restart
    sys.exit(status)
