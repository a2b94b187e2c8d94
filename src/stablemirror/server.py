"""Running the app: one socket, N worker processes (pre-fork), graceful shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys

import uvloop
from aiohttp import web
from aiohttp.web_runner import GracefulExit

from stablemirror.app import build_app
from stablemirror.config import Settings
from stablemirror.index.migrate import upgrade
from stablemirror.metrics import Metrics, multiprocess_dir, prepare_multiprocess_dir

log = logging.getLogger("stablemirror.server")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _run_worker(settings: Settings, sock: socket.socket) -> None:
    loop = uvloop.new_event_loop()
    # One Metrics per worker process, writing to the shared multiprocess directory.
    metrics = Metrics(multiprocess_dir=multiprocess_dir(settings.data_dir))
    web.run_app(build_app(settings, metrics), sock=sock, loop=loop, print=None,
                access_log=None, shutdown_timeout=10)


def serve(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.index_url)  # once, before any worker opens the index
    # Before forking, and for --workers 1 too, so every worker count exports the same way.
    prepare_multiprocess_dir(multiprocess_dir(settings.data_dir), clean=True)
    sock = _bind(*settings.host_port)
    workers = settings.worker_count
    log.info("listening on %s with %d worker(s), data in %s", settings.listen, workers,
             settings.data_dir)
    if workers == 1:
        _run_worker(settings, sock)
        return
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_worker(settings, sock)
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
        _pid, code = os.wait()
        status = status or os.waitstatus_to_exitcode(code)
        forward(signal.SIGTERM, None)  # one worker gone: stop the rest, let a supervisor restart
    sys.exit(status if status > 0 else 0)
