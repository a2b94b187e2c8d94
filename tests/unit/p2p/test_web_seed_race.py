"""Nodes asking the edge for a blob's torrent at the same moment (threads of one worker, or
workers) get the web seed `slots` times, never more (p2p/tracker.py take_web_seed).

Before the lock, a request that found no lease file unlinked "the expired lease" after
another had just created it, and took its own: two nodes got the web seed, and the edge
sent the blob twice (seen as 2.08x edge egress in tests/functional/p2p/test_netns_podman.py,
eight podman pulls at once)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stablemirror.p2p.tracker import Swarms

NODES = 8
ROUNDS = 150


def test_concurrent_requests_take_one_web_seed(tmp_path: Path) -> None:
    swarms = Swarms(tmp_path / "swarms", 5)
    over = []
    with ThreadPoolExecutor(NODES) as pool:
        for blob in range(ROUNDS):
            start = threading.Barrier(NODES)

            def ask(node: int, blob: int = blob, start: threading.Barrier = start) -> bool:
                start.wait(5)
                return swarms.take_web_seed(f"{blob:064x}", "c1", f"n{node}", 1, 60)

            winners = sum(pool.map(ask, range(NODES)))
            if winners != 1:
                over.append((blob, winners))
    assert over == [], f"rounds where not exactly one node got the web seed: {over}"


def test_two_slots_go_to_two_nodes_at_most(tmp_path: Path) -> None:
    swarms = Swarms(tmp_path / "swarms", 5)
    with ThreadPoolExecutor(NODES) as pool:
        for blob in range(ROUNDS // 3):
            start = threading.Barrier(NODES)

            def ask(node: int, blob: int = blob, start: threading.Barrier = start) -> bool:
                start.wait(5)
                return swarms.take_web_seed(f"{blob:064x}", "c1", f"n{node}", 2, 60)

            assert sum(pool.map(ask, range(NODES))) == 2, blob
