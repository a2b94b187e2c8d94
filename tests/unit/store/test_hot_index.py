"""The hot tier's index (store/hot_index.py) opened by several processes at once, as the
workers of a server do on its first start: each switches the new file to WAL, and SQLite
refuses a second switcher at once ("database is locked"), which stopped a worker and with
it the server (seen in CI: tests/functional/store/test_hot_tier.py). Bounded retries
(files/sqlite_wal.py) make every opener succeed."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from stablemirror.store.hot_index import HotIndex
from tests.support.processes import race

OPENERS = 4
ROUNDS = 15


def _open(path: str, start_at: float, out: multiprocessing.Queue[object]) -> None:
    index = HotIndex(Path(path), window=3600.0, promote_after=2)
    time.sleep(max(0.0, start_at - time.time()))  # all at once
    try:
        index.reconcile({}, time.time())
        out.put("ok")
    except Exception as err:  # reported to the test, not lost in a child
        out.put(f"{type(err).__name__}: {err}")
    finally:
        index.close()


def test_processes_opening_a_new_hot_index_at_once_all_succeed(tmp_path: Path) -> None:
    failures = []
    for attempt in range(ROUNDS):
        path = tmp_path / f"hot-{attempt}.db"
        start_at = time.time() + 0.3
        results = race(_open, [(str(path), start_at)] * OPENERS)
        failures += [(attempt, r) for r in results if r != "ok"]
    assert failures == []
