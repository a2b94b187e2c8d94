"""The parent of several workers holds none of the app (docs/footprint.md): after the fork
it is a stdlib-only supervisor, so the center's memory is its workers' and ~12 MiB. It
still does the parent's work: SIGTERM reaches every worker and the server stops cleanly,
logged once (killed workers and the metrics dir: test_server_instances.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.live import LiveServer

# Shared objects that only an interpreter which imported the app (pydantic settings,
# aiohttp, SQLAlchemy, uvloop) has mapped.
APP_LIBRARIES = ("pydantic_core", "aiohttp", "sqlalchemy", "uvloop", "yaml")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _mapped(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split()) >= 6}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_parent_of_two_workers_holds_no_app(
        server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(workers=2)
    assert server.proc is not None
    parent = server.proc.pid
    deadline = time.monotonic() + 10
    while len(workers := _children(parent)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2, server.log()[-2000:]
    assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 200
    in_parent = sorted(lib for lib in APP_LIBRARIES
                       if any(lib in path for path in _mapped(parent)))
    assert in_parent == [], in_parent
    assert all(any("pydantic_core" in p for p in _mapped(w)) for w in workers)
    assert _rss_kib(parent) < 24 * 1024  # the app's imports alone are > 50 MiB
    server.stop()  # SIGTERM to the process group, as an init system sends it
    log = server.log()
    assert log.count("shutting down: 2 worker(s) finish requests in flight") == 1, log
    assert "stopped: shutdown took" in log and "Traceback" not in log, log
