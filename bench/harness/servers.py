"""The servers a benchmark starts: stablemirror (through its command line, hosted or as a
mirror) and Debian's docker-registry (hosted or in proxy mode), each on 127.0.0.1 with its
storage in the run's temp dir, in its own process group so that its whole tree can be
stopped, and ready when `GET /v2/` answers 200."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.client import http
from harness.common import HOST, REPO_ROOT, BenchError, log
from harness.procfs import RssSampler


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    poll_s: float = 0.1  # between readiness checks: the resolution of startup_s

    def start(self, sampler: RssSampler | None, timeout: float) -> None:
        """Start the server and wait until `GET /v2/` answers 200; `sampler` (if any)
        follows the memory of its process tree from then on."""
        log(f"starting {self.name}: {shlex.join(self.argv)}")
        logf = self.log_path.open("ab")  # a restart keeps the failed start's lines
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(REPO_ROOT),
            env=self.env,
            start_new_session=True,  # own process group, so the whole tree can be stopped
        )
        logf.close()
        if sampler is not None:
            sampler.add(self.name, self.proc.pid)
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode} during startup:\n"
                    + self.log_tail()
                )
            try:
                resp = http(self.port, "GET", "/v2/", timeout=2)
                if resp.status == 200:
                    self.startup_s = time.monotonic() - t0
                    log(f"{self.name} ready on :{self.port} after {self.startup_s:.2f}s")
                    return
                last = f"HTTP {resp.status}"
            except (OSError, BenchError) as exc:
                last = str(exc)
            time.sleep(self.poll_s)
        raise BenchError(f"{self.name} not ready after {timeout}s ({last}):\n" + self.log_tail())

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # == pgid thanks to start_new_session
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        # the group may still hold workers even if the leader is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)




SM_COMMAND = (
    "{python} -m stablemirror serve --listen {listen} --data-dir {data_dir} --workers {workers}"
)


def stablemirror_server(
    work: Path,
    name: str,
    python: str,
    workers: int,
    *,
    template: str = SM_COMMAND,
    log_level: str | None = "error",
    upstream: str = "",
    code_src: Path | None = None,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> Server:
    """`stablemirror serve`, hosted or (with `upstream`) a mirror of that URL.  `template`
    has the placeholders {python} {listen} {data_dir} {workers}; `log_level` None keeps the
    server's default (info, with access log lines); `code_src` is a copy of src/ to run
    instead of the installed one; `env` is added to the server's environment; `data_dir`
    (default: a new `<name>-data` in `work`) may be one that an earlier server used."""
    port = free_port()
    data = data_dir or work / f"{name}-data"
    data.mkdir(exist_ok=data_dir is not None)
    argv = [
        part.format(python=python, listen=f"{HOST}:{port}", data_dir=data, workers=workers)
        for part in shlex.split(template)
    ]
    if upstream:
        argv += ["--upstream", upstream]
    server_env = dict(os.environ)
    server_env.pop("STABLEMIRROR_LOG_LEVEL", None)
    if log_level:  # pydantic-settings reads it; the counterpart of docker-registry's log.level
        server_env["STABLEMIRROR_LOG_LEVEL"] = log_level
    if code_src:  # ahead of the editable install's path
        server_env["PYTHONPATH"] = os.pathsep.join(
            [str(code_src), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    server_env.update(env or {})
    return Server(name, port, argv, work / f"{name}.log", env=server_env)


def docker_registry_server(work: Path, name: str, quiet: bool = True, proxy: str = "") -> Server:
    """docker-registry, hosted or (with `proxy`) a pull-through cache of that URL.  `quiet`:
    log level error and no access log, else info level with the access log."""
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    port = free_port()
    root = work / f"{name}-data"
    root.mkdir()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "error" if quiet else "info", "accesslog": {"disabled": quiet}},
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},  # as in Debian's default config
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{HOST}:{port}", "secret": os.urandom(16).hex()},
    }
    if proxy:
        config["proxy"] = {"remoteurl": proxy}
    path = work / f"{name}-config.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    return Server(name, port, [exe, "serve", str(path)], work / f"{name}.log")


def docker_registry_blob_path(work: Path, name: str, digest: str) -> Path:
    """Where docker-registry `name` (started by docker_registry_server) stores a blob."""
    hexd = digest.split(":", 1)[1]
    blobs = work / f"{name}-data" / "docker/registry/v2/blobs/sha256"
    return blobs / hexd[:2] / hexd / "data"
