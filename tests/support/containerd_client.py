"""A private containerd daemon for tests, driven with `ctr`.

Everything lives in a short temporary directory (unix socket paths are limited to 108
bytes, pytest's tmp_path is longer): config.toml, root, state, the gRPC and ttrpc sockets,
and the registry hosts directory (certs.d layout) that `ctr --hosts-dir` reads. No CRI
plugin (not needed to pull, and it wants a CNI setup); the native snapshotter (plain
directories: no overlay mount needed). A missing containerd fails the test, never skips it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.clients import require_tool

START_TIMEOUT = 20.0


class ContainerdFailed(AssertionError):
    pass


class Containerd:
    def __init__(self, namespace: str = "test") -> None:
        self.containerd = require_tool("containerd")
        self.ctr_exe = require_tool("ctr")
        self.dir = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        self.socket = self.dir / "c.sock"
        self.hosts_dir = self.dir / "certs.d"
        self.hosts_dir.mkdir()
        self.namespace = namespace
        self.log_path = self.dir / "containerd.log"
        self.config = self.dir / "config.toml"
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\n'
            f'state = "{self.dir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.dir / "t.sock"}"\n'
            f'[debug]\n  address = "{self.dir / "d.sock"}"\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([self.containerd, "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdFailed(f"containerd exited with {self.proc.returncode}\n"
                                       f"{self.log()}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise ContainerdFailed(f"containerd did not start in {START_TIMEOUT}s\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError as e:
            return f"<containerd log unavailable: {e}>"

    def mirror(self, registry: str, mirror_url: str, fallback: str) -> Path:
        """hosts.toml for `registry`: pull and resolve through `mirror_url` (http://...),
        `fallback` as the server (point it at a dead loopback port: never the internet)."""
        d = self.hosts_dir / registry
        d.mkdir(parents=True, exist_ok=True)
        path = d / "hosts.toml"
        path.write_text(f'server = "{fallback}"\n\n'
                        f'[host."{mirror_url}"]\n  capabilities = ["pull", "resolve"]\n')
        return path

    def ctr(self, *args: str, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        argv = [self.ctr_exe, "--address", str(self.socket), "--namespace", self.namespace,
                *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise ContainerdFailed(f"{' '.join(argv)} failed (rc={proc.returncode})\n"
                                   f"--- stdout ---\n{proc.stdout[-4000:]}\n"
                                   f"--- stderr ---\n{proc.stderr[-4000:]}\n"
                                   f"--- containerd log ---\n{self.log()}")
        return proc

    def pull(self, ref: str) -> subprocess.CompletedProcess[str]:
        return self.ctr("images", "pull", "--hosts-dir", str(self.hosts_dir),
                        "--snapshotter", "native", ref)

    def image_digest(self, ref: str) -> str:
        """The target digest containerd recorded for `ref` (`ctr images ls`)."""
        out = self.ctr("images", "ls").stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return next(f for f in fields if f.startswith("sha256:"))
        raise ContainerdFailed(f"{ref} not in `ctr images ls`:\n{out}")
