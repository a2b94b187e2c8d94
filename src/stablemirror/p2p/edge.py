"""The edge's (or center's) part of a swarm: metadata of blobs it holds, the tracker, the
piece hand-out (and the optional web seed). One per worker; what workers share lives in
files (tracker.py, handout.py)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from stablemirror.p2p.config import P2PSettings
from stablemirror.p2p.credential import verify
from stablemirror.p2p.handout import Grant, Layout, PieceHandout
from stablemirror.p2p.metadata import TorrentCache, with_endpoints
from stablemirror.p2p.tracker import AnnounceRefused, Swarms, failure, parse_announce, response

log = logging.getLogger("stablemirror.p2p")
IDLE_CHECK_SECONDS = 3600.0  # how often an edge looks for idle hand-outs and swarms


@dataclass(frozen=True)
class NodeCredential:
    cluster: str
    node: str
    sig: str


class NoTorrentHere(Exception):
    """A hand-out for a blob this tier made no torrent of (the node skipped `/torrent`)."""


class EdgeSwarms:
    def __init__(self, directory: Path, settings: P2PSettings) -> None:
        self.settings = settings
        self.secrets = {k: v.get_secret_value() for k, v in settings.clusters.items()}
        self.torrents = TorrentCache(directory / "torrents", settings.min_piece_bytes,
                                     settings.max_piece_bytes, settings.target_pieces)
        self.swarms = Swarms(directory / "swarms", settings.announce_seconds)
        self.handout = PieceHandout(directory / "claims", settings.claim_lease_seconds)

    async def remove_idle(self) -> None:
        """Forget hand-outs and swarms nobody asked about lately (handout.py, tracker.py):
        without it an edge kept a directory per blob and cluster it ever served."""
        claims = await asyncio.to_thread(self.handout.remove_idle)
        swarms = await asyncio.to_thread(self.swarms.remove_idle)
        if claims or swarms:
            log.info("p2p state: removed %d idle hand-out(s), %d empty swarm(s)",
                     claims, swarms)

    def admits(self, who: NodeCredential) -> bool:
        return verify(self.secrets, who.cluster, who.node, who.sig)

    async def torrent(self, hex_digest: str, blob: Path, who: NodeCredential, announce: str,
                      web_seed: str) -> bytes:
        """The blob's torrent for this node (call only for a credential it `admits`)."""
        data = await asyncio.to_thread(self.torrents.get, hex_digest, blob)
        s = self.settings
        seeded = await asyncio.to_thread(self.swarms.take_web_seed, hex_digest, who.cluster,
                                         who.node, s.web_seed_nodes, s.web_seed_lease_seconds)
        return with_endpoints(data, announce, web_seed if seeded else None)

    async def claim(self, hex_digest: str, size: int, who: NodeCredential, done: int | None,
                    stalled: bool, missing: list[tuple[int, int]], final: bool = False
                    ) -> Grant | None:
        """The next part of the blob for this node to fetch from here (handout.py); None:
        nothing left to hand out."""
        return await asyncio.to_thread(self._claim, hex_digest, size, who, done, stalled,
                                       missing, final)

    def _claim(self, hex_digest: str, size: int, who: NodeCredential, done: int | None,
               stalled: bool, missing: list[tuple[int, int]], final: bool) -> Grant | None:
        piece = self.torrents.piece_length(hex_digest)
        if piece is None:
            raise NoTorrentHere(hex_digest)
        layout = Layout(size, piece, max(self.settings.claim_bytes // piece, 1))
        return self.handout.claim(hex_digest, who.cluster, who.node, layout, done, stalled,
                                  missing, final=final)

    def announce(self, raw_query: str, remote: str) -> bytes:
        """A tracker answer: a peer list, or a bencoded failure for a refused announce."""
        try:
            a = parse_announce(raw_query)
        except AnnounceRefused as e:
            return failure(e.reason)
        if not self.admits(NodeCredential(a.cluster, a.node, a.sig)):
            return failure("no valid node credential")
        if not self.torrents.known(a.info_hash):
            return failure("unknown torrent")
        peers, seeds, leechers = self.swarms.announce(a, remote)
        return response(peers[: self.settings.max_peers], seeds, leechers,
                        self.settings.announce_seconds)
