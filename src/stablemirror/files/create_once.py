"""Files that several processes may race to create at first start (keys, the node id).

Workers start together, so each may find the file missing. Every one of them writes its
candidate to a private temporary name in the same directory and fsyncs it; link(2), which
refuses to replace, publishes exactly one of them whole; the others discard theirs and read
the winner's. Nobody ever reads a file that is still being written, and a crash leaves
either no file or a complete one (only a stray `.NAME.*.tmp`, never the file half-written).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the names just made or renamed in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_once(path: Path, make: Callable[[], bytes], mode: int = 0o600) -> bytes:
    """The content of `path`; if it does not exist yet, `make()` is written there first by
    exactly one of the processes racing here, and every one of them returns that content."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: its content is the one
        else:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
