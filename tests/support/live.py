"""A real stablemirror server process on loopback, for functional tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    """A free loopback port. Under pytest-xdist each worker takes only ports of its own
    residue, so a port one worker just released is never handed to the other before its
    server binds it. (Linux hands bind(port 0) odd ports only: the residue is of port // 2.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    mine = int(worker[2:]) if worker.startswith("gw") else 0
    for _ in range(200):  # the kernel spreads ephemeral ports: a few tries find a residue
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if (port // 2) % workers == mine:
            return port
    raise RuntimeError(f"no free loopback port with residue {mine} mod {workers}")


class ServerProcess:
    """A server child process on a loopback port, in its own process group, logging to a
    file; restartable on the same port. Subclasses say how to launch it."""

    name = "server"
    ready_statuses: tuple[int, ...] = (200,)

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        """(argv, environment or None to inherit); may write config files first."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        argv, env = self.command()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code in self.ready_statuses:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LiveServer(ServerProcess):
    """`stablemirror serve` as a child process; restartable on the same data dir and port."""

    ready_statuses = (200, 401)  # 401: started with --auth

    def __init__(self, data_dir: Path, *extra_args: str, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        port = free_port()
        super().__init__(data_dir, data_dir.parent / f"server-{port}.log", port)
        self.extra_args = list(extra_args)
        self.workers = workers
        self.env = env or {}

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        return ([sys.executable, "-m", "stablemirror", "serve", "--listen", self.host,
                 "--data-dir", str(self.data_dir), "--workers", str(self.workers),
                 *self.extra_args], {**os.environ, **self.env})
