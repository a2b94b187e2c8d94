"""bench/countproxy.py driven from the harness: a byte-counting (optionally paced) TCP proxy
between a mirror and its upstream, in its own process group."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.common import BENCH_DIR, HOST, BenchError, log

COUNTPROXY = BENCH_DIR / "countproxy.py"


class CountProxy:
    """bench/countproxy.py in its own process group, driven over stdin/stdout."""

    def __init__(self, name: str, target_port: int, work: Path, rate_mbps: float = 0.0,
                 shared: bool = False) -> None:
        self.name = name
        self.shared = shared  # one link for all connections (countproxy --shared)
        self.target_port = target_port
        self.rate_mbps = rate_mbps
        self.log_path = work / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._buf = b""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, str(COUNTPROXY), "--target", f"{HOST}:{self.target_port}",
                 "--rate", str(self.rate_mbps), *(["--shared"] if self.shared else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                start_new_session=True)
        line = self._readline(10)
        if not line.startswith("port "):
            raise BenchError(f"{self.name}: unexpected first line {line!r}")
        self.port = int(line.split()[1])
        log(f"{self.name} on :{self.port} -> :{self.target_port}"
            + (f" (paced to {self.rate_mbps:g} MB/s per connection)" if self.rate_mbps else ""))

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise BenchError(f"{self.name}: no answer within {timeout}s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise BenchError(f"{self.name}: proxy exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def _ask(self, cmd: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self._readline(10)

    def stats(self) -> dict[str, Any]:
        return json.loads(self._ask("stats"))  # type: ignore[no-any-return]

    def reset(self) -> None:
        if self._ask("reset") != "ok":
            raise BenchError(f"{self.name}: reset failed")

    def set_rate(self, mbps: float) -> None:
        """Pace the shared link to `mbps` MB/s from now on (0: no limit); needs `shared`."""
        if self._ask(f"rate {mbps}") != "ok":
            raise BenchError(f"{self.name}: rate failed")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def blob_gets(stats: dict[str, Any], digest: str) -> list[list[str]]:
    """The GETs of that blob among the requests a proxy saw ([method, path, range] each)."""
    return [r for r in stats.get("requests", []) if r[0] == "GET" and r[1].endswith(digest)]


def settle_counter(proxy: CountProxy, quiet_s: float, limit_s: float) -> dict[str, Any]:
    """The proxy's stats once its upstream bytes stood still for quiet_s (at most limit_s)."""
    deadline = time.monotonic() + limit_s
    st = proxy.stats()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        nxt = proxy.stats()
        if nxt["down"] != st["down"]:
            still_since = time.monotonic()
        st = nxt
        if time.monotonic() - still_since >= quiet_s:
            return st
    log(f"{proxy.name}: upstream bytes still moving after {limit_s:.0f}s")
    return st

