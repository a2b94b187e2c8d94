"""A node's side of the edge's piece hand-out (p2p/handout.py, docs/p2p.md).

While a node pulls a blob from its swarm, this loop asks the edge which part of the blob it
should fetch from the edge (`GET .../pieces`), fetches that part with one ranged GET through
the upstream group (its failover and token flow, so it works behind `auth` too), gives each
piece to the node's libtorrent session, which checks it against the torrent's hashes and
offers it to the peers, and asks again. The edge hands each part to one node, so it sends
the blob into the swarm about once; the nodes trade the rest.

When the edge has nothing left to hand out the loop waits; if no new piece came for
`claim_stall_seconds` it says so (`stalled=1` with the runs of pieces it lacks), and the
edge hands it a part another node had fetched; it stays stalled, taking part after part,
until a peer sends it a piece again. Any failure here only costs time: the
source's no-progress fallback (mirror/p2p_source.py) stays the last resort.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import (
    NoUpstreamAvailable,
    Upstream,
    UpstreamAnswer,
    UpstreamFailure,
    with_ns,
)

if TYPE_CHECKING:  # the engine loads libtorrent: only a node with p2p.enabled builds one
    from stablemirror.p2p.engine import Swarm

log = logging.getLogger("stablemirror.p2p")
WAIT = 0.25  # seconds between asks while everything is handed out
RETRY = 1.0  # after a failed ask or fetch
MISSING_RUNS = 32  # runs of missing pieces sent with a stalled ask (bounded query)
ANSWER_LIMIT = 4096


@dataclass(frozen=True)
class Part:
    group: int
    offset: int
    length: int


class NoHandout(Exception):
    """The edge hands nothing out for this blob (an edge without it, or no torrent)."""


class EdgePieces:
    def __init__(self, plain: GroupBlobSource, swarm: Swarm, headers: dict[str, str],
                 stall_seconds: float) -> None:
        self.plain = plain
        self.swarm = swarm
        self.headers = headers
        self.stall_seconds = stall_seconds
        self.fetched = 0  # bytes of parts fetched from the edge

    async def run(self) -> None:
        done: int | None = None
        stalled, peer_bytes = False, self.swarm.peer_bytes()
        while not self.swarm.complete():
            # Stalled from `stall_seconds` without a new piece until a peer sends one again:
            # a node its peers cannot reach takes part after part without waiting each time.
            now_from_peers = self.swarm.peer_bytes()
            if now_from_peers != peer_bytes:
                stalled, peer_bytes = False, now_from_peers
            stalled = stalled or self.swarm.idle_seconds() > self.stall_seconds
            try:
                part = await self._ask(done, stalled)
            except NoHandout as e:
                log.info("no piece hand-out for %s: %s", self.plain.digest, e)
                return
            except (UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
                log.info("piece hand-out for %s failed: %s", self.plain.digest, e)
                await asyncio.sleep(RETRY)
                continue
            done = None
            if part is None:
                await asyncio.sleep(WAIT)
                continue
            try:
                await self._fetch(part)
                done = part.group
            except (UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
                log.info("fetching part %d of %s failed: %s", part.group, self.plain.digest,
                         e)
                await asyncio.sleep(RETRY)
        if done is not None:  # say the last part is done, or it stays held until its expiry
            try:
                await self._ask(done, False, final=True)
            except (NoHandout, UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
                log.info("piece hand-out for %s: last part not reported: %s",
                         self.plain.digest, e)

    def _path(self, u: Upstream, suffix: str = "") -> str:
        return with_ns(f"/v2/{u.repository(self.plain.repository)}/blobs/{self.plain.digest}"
                       f"{suffix}", self.plain.ns)

    async def _ask(self, done: int | None, stalled: bool, final: bool = False
                   ) -> Part | None:
        query: dict[str, str] = {}
        if done is not None:
            query["done"] = str(done)
        if final:
            query["final"] = "1"
        if stalled:
            query["stalled"] = "1"
            query["missing"] = ",".join(f"{a}-{b}" for a, b in
                                        self.swarm.missing_runs(MISSING_RUNS))
        suffix = "/pieces" + ("?" + "&".join(f"{k}={v}" for k, v in query.items())
                              if query else "")

        async def call(u: Upstream) -> Part | None:
            path = self._path(u, suffix)
            response = await u.request("GET", path, self.headers, self.plain.via)
            try:
                if response.status == 204:
                    return None
                if response.status == 405:  # an edge from before the hand-out
                    raise NoHandout("http_405")
                if response.status != 200:
                    raise UpstreamFailure(u.name, f"http_{response.status}")
                if response.content_length is None or response.content_length > ANSWER_LIMIT:
                    raise UpstreamFailure(u.name, "bad_handout_answer")
                body = json.loads(await response.read())
                return Part(int(body["group"]), int(body["offset"]), int(body["length"]))
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError,
                    TypeError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                response.release()

        try:
            return await self.plain.group.attempt(call)
        except UpstreamAnswer as e:  # 404: no torrent (or p2p off) there; 401/403: refused
            raise NoHandout(f"http_{e.status}") from e

    async def _fetch(self, part: Part) -> None:
        """The part's missing pieces, by one ranged GET, into the swarm piece by piece."""
        swarm, piece_length = self.swarm, self.swarm.piece_length
        if part.offset % piece_length or part.length <= 0 or \
                part.offset + part.length > swarm.size:
            raise UpstreamFailure("p2p", "bad_handout")
        last = (part.offset + part.length - 1) // piece_length
        end = part.offset + part.length

        async def call(u: Upstream) -> None:
            first = part.offset // piece_length
            while first <= last and swarm.have(first):  # sent by a peer, or a retry
                first += 1
            if first > last:
                return
            start = first * piece_length
            response = await u.request("GET", self._path(u),
                                       {"Range": f"bytes={start}-{end - 1}"}, self.plain.via)
            try:
                if response.status != 206 or response.headers.get("Content-Range", "") \
                        != f"bytes {start}-{end - 1}/{swarm.size}":
                    raise UpstreamFailure(u.name, f"http_{response.status}_not_the_range")
                for piece in range(first, last + 1):
                    size = min(piece_length, swarm.size - piece * piece_length)
                    data = await response.content.readexactly(size)
                    self.fetched += size
                    if not swarm.have(piece):
                        swarm.add_piece(piece, data)
            except (TimeoutError, aiohttp.ClientError, OSError,
                    asyncio.IncompleteReadError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                response.release()

        await self.plain.group.attempt(call)
