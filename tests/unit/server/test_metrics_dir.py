"""metrics_dir.py: each server's metrics directory is its own, off the data filesystem
when it can be, and left behind only by a server that died (then the next one removes it)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from stablemirror.server.metrics_dir import LOCK, PREFIX, InstanceMetricsDir, running_server_dir

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def _fake_instance(base: Path, name: str) -> Path:
    d = base / f"{PREFIX}{name}"
    d.mkdir()
    (d / LOCK).touch()
    (d / "counter_1.db").write_bytes(b"\0" * 16)
    return d


def test_abandoned_dirs_go_live_ones_stay(tmp_path: Path) -> None:
    base, data = tmp_path / "base", tmp_path / "data"
    base.mkdir()
    data.mkdir()
    abandoned = _fake_instance(base, "1-dead")
    live = _fake_instance(base, "2-live")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(live / LOCK)],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        mine = InstanceMetricsDir(data, base)
        assert not abandoned.exists()
        assert live.exists()
        assert mine.path.parent == base and mine.path.name.startswith(f"{PREFIX}{os.getpid()}-")
        mine.publish()
        assert running_server_dir(data) == mine.path
        # Another process sees the lock held while this "server" lives.
        fd = os.open(mine.path / LOCK, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise AssertionError("the instance lock is not held")
            except BlockingIOError:
                pass
        finally:
            os.close(fd)
        mine.remove()
        assert not mine.path.exists()
        assert running_server_dir(data) is None
    finally:
        holder.kill()
        holder.wait(10)


def test_default_base_is_not_the_data_filesystem(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    mine = InstanceMetricsDir(data)
    try:
        assert not mine.path.is_relative_to(data)
        if Path("/dev/shm").is_dir() and os.stat("/dev/shm").st_dev != os.stat(data).st_dev:
            assert mine.path.parent == Path("/dev/shm")
    finally:
        mine.remove()
