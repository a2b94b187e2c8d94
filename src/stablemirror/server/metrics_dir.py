"""Where one server instance keeps its workers' memory-mapped metric files.

prometheus_client's multiprocess mode writes every value through a memory-mapped, sparse
file. On a full filesystem a page fault on such a file is SIGBUS, not an error: the worker
dies mid-request. So the files never live on the data filesystem, which a registry fills
by design: each server gets a private directory on another filesystem (a tmpfs when there
is one: /dev/shm, $XDG_RUNTIME_DIR; else the temp dir), made after the socket is bound,
held by a lock for the server's lifetime and removed when it exits. A second server that
fails to start never touches the first one's values; a directory whose server was killed is
removed by the next server that starts (its lock is free).

`<data_dir>/metrics-dir` names the directory of the server running on that data dir, for
`stablemirror gc` (which adds to its counters). docs/metrics.md says the same for operators.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "stablemirror-metrics-"
LOCK = "owner.lock"
POINTER = "metrics-dir"


def _candidates(configured: Path | None) -> list[Path]:
    if configured is not None:
        return [configured]
    found = [Path("/dev/shm")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        found.append(Path(runtime))
    found.append(Path(tempfile.gettempdir()))
    return found


def _base_dir(data_dir: Path, configured: Path | None) -> Path:
    """The first writable candidate on a filesystem other than the data dir's."""
    data_dev = os.stat(data_dir).st_dev
    usable = [p for p in _candidates(configured) if p.is_dir() and os.access(p, os.W_OK | os.X_OK)]
    for path in usable:
        if os.stat(path).st_dev != data_dev:
            return path
    if usable:
        return usable[0]  # all on one filesystem: still never inside the data dir
    raise RuntimeError(f"no writable directory for metrics among {_candidates(configured)}")


def _remove_abandoned(base: Path) -> None:
    """Directories of servers that died without cleaning up: nobody holds their lock."""
    for entry in base.glob(PREFIX + "*"):
        try:
            fd = os.open(entry / LOCK, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live server's
        finally:
            os.close(fd)
        shutil.rmtree(entry, ignore_errors=True)


class InstanceMetricsDir:
    """This server's private metrics directory; the lock is held until the process exits
    (forked workers share the locked file description, so it outlives a dead master too)."""

    def __init__(self, data_dir: Path, configured_base: Path | None = None) -> None:
        base = _base_dir(data_dir, configured_base)
        _remove_abandoned(base)
        self.path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
        # Locked before it takes its name: a server starting alongside never sees it free.
        self._lock_fd = os.open(self.path / f"{LOCK}.new", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.rename(self.path / f"{LOCK}.new", self.path / LOCK)
        self._owner = os.getpid()
        self._pointer = data_dir / POINTER
        # Workers leave with os._exit, which skips atexit: only the master removes it.
        atexit.register(self.remove)

    def publish(self) -> None:
        """Name this directory in the data dir (atomically); a full disk only costs gc its
        counter, so a failure is not fatal."""
        tmp = self._pointer.with_name(f"{POINTER}.{os.getpid()}.tmp")
        try:
            tmp.write_text(str(self.path))
            os.replace(tmp, self._pointer)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self) -> None:
        if os.getpid() != self._owner:
            return
        remove_instance_dir(self.path, self._pointer, self._lock_fd)

    def hand_over(self) -> tuple[Path, Path, int]:
        """For a process that exec()s (server/supervisor.py): the directory, its pointer and
        the lock's fd, kept open across the exec; the new program removes them."""
        atexit.unregister(self.remove)
        os.set_inheritable(self._lock_fd, True)
        return self.path, self._pointer, self._lock_fd


def remove_instance_dir(path: Path, pointer: Path, lock_fd: int) -> None:
    with contextlib.suppress(OSError):
        if pointer.read_text() == str(path):
            pointer.unlink()
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.close(lock_fd)


def running_server_dir(data_dir: Path) -> Path | None:
    """The metrics directory of the server running on `data_dir`, if one is."""
    try:
        path = Path((data_dir / POINTER).read_text().strip())
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return path  # locked: its server is alive
    finally:
        os.close(fd)
    return None
