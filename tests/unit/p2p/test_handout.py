"""The edge's piece hand-out (p2p/handout.py): groups in order, once each, leases that
expire, a stalled node handed what it lacks, and workers racing for one blob's groups."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from stablemirror.p2p.handout import Grant, Layout, PieceHandout, parse_runs
from tests.support.processes import race

HEX = "ab" * 32
KiB = 1 << 10
LAYOUT = Layout(size=10 * 256 * KiB + 100, piece_length=256 * KiB, group_pieces=4)


def _claim(h: PieceHandout, node: str, done: int | None = None, stalled: bool = False,
           missing: list[tuple[int, int]] | None = None, now: float = 1000.0
           ) -> Grant | None:
    return h.claim(HEX, "c1", node, LAYOUT, done, stalled, missing or [], now=now)


def test_layout_cuts_whole_pieces_and_a_short_last_group() -> None:
    assert LAYOUT.groups == 3
    assert LAYOUT.grant(0) == Grant(0, 0, 4 * 256 * KiB)
    assert LAYOUT.grant(2) == Grant(2, 8 * 256 * KiB, 2 * 256 * KiB + 100)
    assert Layout(1, 256 * KiB, 4).groups == 1


def test_groups_go_out_in_order_once_each_then_nothing(tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    assert [g.group for g in (_claim(h, "a"), _claim(h, "b"), _claim(h, "c"))
            if g is not None] == [0, 1, 2]
    assert _claim(h, "d") is None
    assert _claim(h, "a", done=0) is None  # done, and nothing left


def test_an_expired_claim_goes_to_the_next_asker_a_finished_one_never(
        tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    assert _claim(h, "a", now=0).group == 0  # type: ignore[union-attr]
    assert _claim(h, "b", now=1).group == 1  # type: ignore[union-attr]
    assert _claim(h, "b", done=1, now=2).group == 2  # type: ignore[union-attr]
    assert _claim(h, "b", done=2, now=10) is None
    assert _claim(h, "c", now=31).group == 0  # type: ignore[union-attr]  # a went silent
    assert _claim(h, "a", done=0, now=32) is None  # too late: c holds it now


def test_asking_again_gives_up_what_the_node_held(tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    assert _claim(h, "a").group == 0  # type: ignore[union-attr]
    # a asks again without finishing 0 (its fetch failed): 0 is free again, for a too
    assert _claim(h, "a").group == 0  # type: ignore[union-attr]


def test_a_stalled_node_gets_a_finished_group_it_lacks(tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    for group in range(3):
        _claim(h, "a", done=group - 1 if group else None)
    _claim(h, "a", done=2)
    assert _claim(h, "b") is None  # all fetched by a: take them from a
    grant = _claim(h, "b", stalled=True, missing=[(5, 9)])  # a unreachable for b
    assert grant is not None and grant.group == 1
    assert _claim(h, "c", stalled=True, missing=[(4, 7)]) is None  # b is fetching it now


def test_parse_runs_refuses_nonsense() -> None:
    assert parse_runs("0-3,7,9-9") == [(0, 3), (7, 7), (9, 9)]
    assert parse_runs("") == []
    for bad in ("3-1", "x", "-1", "1-y"):
        with pytest.raises(ValueError):
            parse_runs(bad)


def _race(directory: str, node: str, rounds: int, out: multiprocessing.Queue[object]) -> None:
    h = PieceHandout(Path(directory), lease_seconds=600)
    layout = Layout(size=200 * 256 * KiB, piece_length=256 * KiB, group_pieces=1)
    got, done = [], None
    for _ in range(rounds):
        grant = h.claim(HEX, "c1", node, layout, done, False, [])
        if grant is None:
            break
        got.append(grant.group)
        done = grant.group
    out.put((node, got))


def test_workers_racing_hand_each_group_out_exactly_once(tmp_path: Path) -> None:
    """Four processes (an edge's workers) claim 200 groups at once, several times over."""
    for attempt in range(5):
        where = tmp_path / str(attempt)
        results = race(_race, [(str(where), f"n{i}", 300) for i in range(4)])
        groups = sorted(g for _, got in results for g in got)  # type: ignore[misc]
        assert groups == list(range(200)), attempt


def test_a_final_report_marks_the_last_part_done_and_hands_out_nothing(
        tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    for group in range(3):
        _claim(h, "a", done=group - 1 if group else None)
    assert h.claim(HEX, "c1", "a", LAYOUT, 2, False, [], now=1000.0, final=True) is None
    # without it, part 2 stayed held by `a` for the lease and nobody stalled could get it
    grant = _claim(h, "b", stalled=True, missing=[(8, 9)])
    assert grant is not None and grant.group == 2


def test_a_stalled_node_takes_over_a_part_held_too_long(tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=30)
    for group in range(3):
        _claim(h, f"n{group}", now=0)  # n2 holds part 2 and then dies
    assert _claim(h, "b", stalled=True, missing=[(8, 9)], now=5) is None  # n2 may be busy
    grant = _claim(h, "b", stalled=True, missing=[(8, 9)], now=7)  # past a fifth of 30 s
    assert grant is not None and grant.group == 2


def test_an_idle_hand_out_is_forgotten_and_a_later_one_starts_afresh(tmp_path: Path) -> None:
    h = PieceHandout(tmp_path, lease_seconds=60)
    assert (g := _claim(h, "n1")) is not None and g.group == 0
    assert h.remove_idle(now=time.time() + 3600) == 0  # asked about within the day: kept
    assert h.remove_idle(now=time.time() + 2 * 86400) == 1
    assert not (tmp_path / HEX).exists()
    assert (g := _claim(h, "n2")) is not None and g.group == 0  # a new hand-out
