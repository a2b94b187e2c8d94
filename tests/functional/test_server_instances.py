"""server.py as an operator sees it: one server's metrics belong to it alone, and a worker
that dies is never a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.live import LiveServer

TIMEOUT = 30


def _pulls(url: str, namespace: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=TIMEOUT).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("stablemirror_pulls_total{") and f'namespace="{namespace}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_second_server_that_cannot_bind_leaves_the_first_alone(
        server_factory: Callable[..., LiveServer]) -> None:
    first = server_factory(workers=2)
    for _ in range(3):
        requests.get(f"{first.url}/v2/moved/blobs/sha256:{'0' * 64}", timeout=TIMEOUT)
    assert _pulls(first.url, "moved") == 3
    pointer_file = first.data_dir / "metrics-dir"
    pointer = pointer_file.read_text() if pointer_file.exists() else None

    second = LiveServer(first.data_dir, workers=2)
    second.port = first.port  # taken: this one cannot bind
    argv, env = second.command()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode != 0, done.stderr[-2000:]
    assert done.stderr.decode().strip() == (
        f"stablemirror: error: cannot listen on {first.host}: address already in use")

    assert _pulls(first.url, "moved") == 3  # the failed start wiped them before the fix
    assert pointer is not None and pointer_file.read_text() == pointer
    assert Path(pointer).is_dir()


def test_metrics_dir_is_removed_on_exit(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(workers=2)
    metrics_dir = Path((server.data_dir / "metrics-dir").read_text())
    assert list(metrics_dir.glob("*.db"))
    server.stop()
    assert not metrics_dir.exists()
    assert not (server.data_dir / "metrics-dir").exists()


def test_a_killed_worker_is_not_a_clean_exit(server_factory: Callable[..., LiveServer]) -> None:
    server = server_factory(workers=2)
    assert server.proc is not None
    deadline = time.monotonic() + 10
    while len(workers := _children(server.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGBUS)  # what a page fault on a full tmpfs does
    code = server.proc.wait(30)
    assert code == 128 + signal.SIGBUS, (code, server.log()[-2000:])
    assert f"worker {workers[0]} killed by SIGBUS" in server.log()


def test_fresh_auth_servers_start_every_worker_on_one_key(tmp_path: Path) -> None:
    """Both workers of a fresh `serve --auth` create the keys at once: every start must
    leave both alive, agreeing on one token key and one checkpoint key."""
    for round_ in range(15):  # bounded: each start is a second or two (the race: ~1 in 8)
        data = tmp_path / f"round{round_}" / "data"
        data.mkdir(parents=True)
        server = LiveServer(data, "--auth", workers=2,
                            env={"STABLEMIRROR_ADMIN_PASSWORD": "pw-for-the-race-test"})
        server.start()
        try:
            assert server.proc is not None
            jwks = {requests.get(f"{server.url}/.well-known/jwks.json",
                                 headers={"Connection": "close"}, timeout=TIMEOUT).text
                    for _ in range(20)}  # both workers answer some of these
            assert len(jwks) == 1, jwks
            deadline = time.monotonic() + 10
            key = data / "audit-checkpoint.key"
            while not key.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----"), round_
            time.sleep(0.5)
            assert server.proc.poll() is None, server.log()[-3000:]
            assert len(_children(server.proc.pid)) == 2, server.log()[-3000:]
            assert "Traceback" not in server.log(), server.log()[-3000:]
        finally:
            server.stop()
