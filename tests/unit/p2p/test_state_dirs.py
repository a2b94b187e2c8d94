"""The edge's state directories (p2p/state_dirs.py): idle ones are removed, used ones kept,
and a removal racing the workers that lock them never lets two hold one directory's lock
(without the lock-file identity check in state_dirs._lock, the race test fails)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from stablemirror.p2p.state_dirs import locked, remove_idle
from tests.support.processes import race


def _age(where: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    for entry in where.iterdir():
        os.utime(entry, (then, then))


def test_idle_directories_go_used_ones_stay(tmp_path: Path) -> None:
    old, fresh = tmp_path / "aa" / "east", tmp_path / "bb" / "east"
    for where in (old, fresh):
        with locked(where):
            (where / "claims.json").write_text("{}")
    _age(old, 7200)
    assert remove_idle(tmp_path, 3600) == 1
    assert not (tmp_path / "aa").exists()  # the blob's directory too, once empty
    assert (fresh / "claims.json").is_file()
    with locked(old):  # a later claim starts a new directory
        assert (old / "lock").is_file()


def _hold(root: str, rounds: int, out: multiprocessing.Queue[object]) -> None:
    """Lock the one state directory `rounds` times; inside, a marker only one holder may
    create: a second holder (on a lock the remover had already unlinked) is caught."""
    where = Path(root) / "ab" / "east"
    overlaps = 0
    for _ in range(rounds):
        with locked(where):
            try:
                fd = os.open(where / "held", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except (FileExistsError, FileNotFoundError):
                overlaps += 1
                continue
            os.close(fd)
            time.sleep(0.0005)
            os.unlink(where / "held")
    out.put(overlaps)


def _remove(root: str, until: float) -> None:
    # Idle after 0.1 s, not 0: a directory made a moment ago is never idle (as in use,
    # where idle is a day); with 0 a locker under load could see its new directory
    # removed LOCK_ATTEMPTS times in a row and give up, which only this test could do.
    while time.monotonic() < until:
        remove_idle(Path(root), 0.1)


def test_removal_racing_workers_never_lets_two_hold_one_lock(tmp_path: Path) -> None:
    for attempt in range(3):
        root = str(tmp_path / str(attempt))
        remover = multiprocessing.Process(target=_remove, args=(root, time.monotonic() + 60))
        remover.start()
        overlaps = race(_hold, [(root, 300)] * 3)
        remover.terminate()
        remover.join(timeout=10)
        assert overlaps == [0, 0, 0], attempt
