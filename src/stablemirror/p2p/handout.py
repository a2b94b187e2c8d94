"""The edge's piece hand-out: which node of a cluster fetches which part of a blob from the
edge, so the edge sends each byte into a swarm about once (docs/p2p.md, "Piece hand-out").

A blob's pieces are cut into groups of about `claim_bytes`. A node asks for a group, fetches
it from the edge by one ranged GET, gives each piece to its libtorrent session (which
checks it against the torrent's hashes) and so into the swarm, and asks for the next. The
others take those pieces from it. Groups are handed out in order, so the pieces a streaming
client needs first enter the swarm first.

A claim has an owner (the node) and an expiry (`lease_seconds` from the grant): a node
that died mid-fetch loses its group to the next asker. A node asking again has finished
(`done`) or given up on what it held, so its other open claims are released. A node that
got nothing new for a while (`stalled`: its peers are gone, or P2P is blocked for it) is
handed a group it lacks even if another node fetched it before, or holds it for more than
a fifth of the lease (it may have died): that costs the edge a second copy of that group
only, never of the blob.

State per (blob, cluster) is one JSON file, read and replaced under an `flock` so the
workers of an edge agree (the kernel drops the lock with its holder); a state nobody asked
about for a day is removed (state_dirs.py).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from stablemirror.p2p.state_dirs import locked, remove_idle

# A hand-out nobody asked about for a day is over: its swarm has the blob or has gone.
IDLE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Grant:
    group: int
    offset: int
    length: int


@dataclass(frozen=True)
class Layout:
    """How a blob's bytes are cut: pieces of `piece_length`, groups of `group_pieces`."""
    size: int
    piece_length: int
    group_pieces: int

    @property
    def groups(self) -> int:
        group_bytes = self.piece_length * self.group_pieces
        return max((self.size + group_bytes - 1) // group_bytes, 1)

    def grant(self, group: int) -> Grant:
        start = group * self.piece_length * self.group_pieces
        return Grant(group, start, min(self.piece_length * self.group_pieces,
                                       self.size - start))

    def group_of_piece(self, piece: int) -> int:
        return piece // self.group_pieces


def parse_runs(text: str, limit: int = 64) -> list[tuple[int, int]]:
    """`a-b,c-d,e`: inclusive runs of piece numbers (a node's missing pieces)."""
    runs: list[tuple[int, int]] = []
    for part in text.split(",")[:limit]:
        if not part:
            continue
        first, _, last = part.partition("-")
        a = int(first)
        b = int(last) if last else a
        if a < 0 or b < a:
            raise ValueError(f"bad piece run {part!r}")
        runs.append((a, b))
    return runs


class PieceHandout:
    def __init__(self, directory: Path, lease_seconds: float) -> None:
        self.directory = directory
        self.lease_seconds = lease_seconds

    def claim(self, hex_digest: str, cluster: str, node: str, layout: Layout,
              done: int | None, stalled: bool, missing: list[tuple[int, int]],
              now: float | None = None, final: bool = False) -> Grant | None:
        """The next group for `node`, or None: every group is claimed (take pieces from
        the peers). `final`: the node has the whole blob; record `done`, hand out nothing."""
        where = self.directory / hex_digest / cluster
        with locked(where):
            state = _load(where / "claims.json")
            group = _choose(state, layout, node, done, stalled, missing,
                            time.time() if now is None else now, self.lease_seconds, final)
            _store(where / "claims.json", state)
        return None if group is None else layout.grant(group)

    def remove_idle(self, now: float | None = None) -> int:
        """Forget the claims of every (blob, cluster) nobody asked about for IDLE_SECONDS
        (state_dirs.py); returns how many. A node asking later starts a new hand-out."""
        return remove_idle(self.directory, IDLE_SECONDS, now)


# claims.json: {"<group>": [node, granted_at, done]}
Claims = dict[str, list[object]]


def _choose(state: Claims, layout: Layout, node: str, done: int | None, stalled: bool,
            missing: list[tuple[int, int]], now: float, lease: float, final: bool
            ) -> int | None:
    if done is not None:
        held = state.get(str(done))
        if held is not None and held[0] == node:
            held[2] = True
    for key, (holder, _, finished) in list(state.items()):
        if holder == node and not finished:
            del state[key]  # asking again: it finished (above) or gave up on the rest
    if final:
        return None
    for group in range(layout.groups):
        held = state.get(str(group))
        if held is None or (not held[2] and float(str(held[1])) + lease < now):
            state[str(group)] = [node, now, False]
            return group
    if not stalled:
        return None
    for first, last in missing:
        for group in range(layout.group_of_piece(first),
                           min(layout.group_of_piece(last), layout.groups - 1) + 1):
            held = state.get(str(group))
            if held is None:
                continue
            # fetched by a node the stalled one cannot reach, or held a while by one that
            # may have died (a fifth of the lease: before the node gives up on P2P)
            if held[2] or float(str(held[1])) + lease / 5 < now:
                state[str(group)] = [node, now, False]
                return group
    return None


def _load(path: Path) -> Claims:
    try:
        loaded = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _store(path: Path, state: Claims) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
