"""create_once: many processes racing to create one file all end up with the same,
complete content (the audit checkpoint key and the node id are made this way)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from stablemirror.audit.retention import CheckpointKey
from stablemirror.files.create_once import create_once
from tests.support.processes import race

PROCESSES = 8
ROUNDS = 15


def _load_key(path: str, barrier: Barrier, results: multiprocessing.Queue[str]) -> None:
    barrier.wait(10)
    try:
        results.put(CheckpointKey.load_or_create(Path(path)).key_id)
    except Exception as e:  # reported to the test, which fails on it
        results.put(f"error: {e!r}")


def test_racing_processes_agree_on_one_checkpoint_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        path = tmp_path / f"round{round_}" / "audit-checkpoint.key"
        barrier = ctx.Barrier(PROCESSES)
        got = race(_load_key, [(str(path), barrier)] * PROCESSES, ctx, timeout=30)
        assert len(set(got)) == 1 and not got[0].startswith("error"), (round_, got)
        assert got[0] == CheckpointKey.load_or_create(path).key_id
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no tmp left


def test_existing_content_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "node-id"
    assert create_once(path, lambda: b"first", mode=0o644) == b"first"
    assert create_once(path, lambda: b"second") == b"first"
    assert path.stat().st_mode & 0o777 == 0o644
