"""A node's fetch leader's source for blob misses: pieces from the cluster's swarm
(docs/p2p.md), the same pattern as delta_source.py.

It is a `BlobUpstream` like GroupBlobSource: what it yields goes into the same `.part` in
offset order, so the waiting client streams the blob as pieces arrive; the read position's
next pieces get deadlines (libtorrent fetches them first), the rest come rarest-first; the
parts of the blob the edge hands to this node come from the edge (p2p_handout.py).
Only pieces the engine verified (SHA-256 Merkle tree) are yielded; the leader checks the
whole blob's SHA-256 before it is published. No metadata from the edge, or no new verified
piece for `no_progress_seconds`, turns this into the plain source for the rest of the
fetch: the leader resumes with a Range GET from the bytes it already has. Once published,
the blob is seeded from the store (`published`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from stablemirror.client.registry import read_limited
from stablemirror.metrics import Metrics
from stablemirror.metrics.p2p import P2PFallback
from stablemirror.mirror.p2p_handout import EdgePieces
from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import (
    NoUpstreamAvailable,
    Upstream,
    UpstreamAnswer,
    UpstreamFailure,
    with_ns,
)
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestTooLarge
from stablemirror.store.protocol import BlobStore

if TYPE_CHECKING:  # the engine loads libtorrent: only a node with p2p.enabled builds one
    from stablemirror.p2p.engine import NodeEngine, Swarm

log = logging.getLogger("stablemirror.p2p")
READ = 1 << 20  # bytes read from the engine's file per yield
READ_AHEAD_BYTES = 8 << 20  # verified pieces read ahead of the one being sent
POLL = 0.02
TORRENT_LIMIT = 4 << 20
RECENT = 64  # finished pulls kept for GET /p2p/status


class NoMetadata(Exception):
    pass


class MirrorP2P:
    """What every P2P source of one node shares: the engine, the store, metrics."""

    def __init__(self, engine: NodeEngine, store: BlobStore, metrics: Metrics) -> None:
        self.engine = engine
        self.store = store
        self.metrics = metrics
        self.timeout = engine.settings.no_progress_seconds
        self._task: asyncio.Task[None] | None = None
        self._uploaded: dict[str, int] = {}
        self.finished: dict[str, dict[str, int | str | None]] = {}  # recent pulls, by hex

    def snapshot(self) -> dict[str, object]:
        """Per blob: the pulls now, the recent ones, and what each seed sent since
        (`GET /p2p/status`)."""
        seeding = self.engine.seeding()
        blobs: list[dict[str, object]] = []
        for key, swarm in self.engine.swarms.items():
            swarm.sample()
            c = swarm.counters
            blobs.append({"digest": f"sha256:{key}", "state": "pulling", "size": swarm.size,
                          "verified": swarm.verified_bytes(), "from_peers": c.from_peers,
                          "from_edge": c.from_edge, "uploaded": c.uploaded,
                          "rejected": c.rejected, "peers": c.peers})
        for key, pulled in self.finished.items():
            handle = seeding.get(key)
            status = handle.status() if handle is not None else None
            blobs.append({**pulled, "digest": f"sha256:{key}",
                          "state": "seeding" if status is not None else "done",
                          "uploaded": int(status.total_payload_upload) if status is not None
                          else pulled.get("uploaded"),
                          "peers": int(status.num_peers) if status is not None else 0})
        return {"node": self.engine.node, "cluster": self.engine.settings.cluster,
                "blobs": blobs}

    def remember(self, hex_digest: str, pulled: dict[str, int | str | None]) -> None:
        if len(self.finished) >= RECENT:
            self.finished.pop(next(iter(self.finished)))
        self.finished[hex_digest] = pulled

    def source(self, plain: GroupBlobSource) -> P2PBlobSource:
        return P2PBlobSource(self, plain)

    def published(self, digest: Digest, source: object) -> None:
        """The blob is in the store, verified: seed it from there, drop the download."""
        if not isinstance(source, P2PBlobSource):
            return
        path = self.store.local_path(digest)
        try:
            source.finish(path)
            if source.torrent is not None and path is not None:
                self.engine.seed(digest.hex, source.torrent, path)  # after a fallback
        except Exception:  # seeding is a favour to the peers: the blob is published
            log.exception("seeding %s failed", digest)

    def start(self) -> None:
        self.engine.start()
        self._task = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        """Peers and upload counted once a second (seeding goes on after the pulls)."""
        while True:
            await asyncio.sleep(1.0)
            peers = 0
            handles = {**{k: s.handle for k, s in self.engine.swarms.items()},
                       **self.engine.seeding()}
            for key, handle in handles.items():
                status = handle.status()
                peers += int(status.num_peers)
                key_up = f"{key}:{id(handle)}"
                up = int(status.total_payload_upload)
                self.metrics.p2p_upload(up - self._uploaded.get(key_up, 0))
                self._uploaded[key_up] = up
            self.metrics.p2p_swarms(peers, len(self.engine.swarms),
                                    len(self.engine.seeding()))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.engine.aclose()


class P2PBlobSource:
    def __init__(self, p2p: MirrorP2P, plain: GroupBlobSource) -> None:
        self.p2p = p2p
        self.plain = plain
        self.digest = plain.digest
        self.torrent: bytes | None = None
        self._swarm: Swarm | None = None
        self._handout: asyncio.Task[None] | None = None  # parts fetched from the edge
        self._off = False
        self._http_from: int | None = None  # where plain HTTP took over
        self._counted = False

    @property
    def max_attempts(self) -> int:
        return self.plain.max_attempts + 1  # room for the switch to the plain source

    def retry_plain(self) -> bool:
        """The assembled blob did not hash right (fetch.py): once, fetch it whole."""
        if self._off:
            return False
        self._fall_back("digest_mismatch", 0)
        return True

    def _fall_back(self, reason: P2PFallback, offset: int) -> None:
        log.warning("p2p pull of %s goes on by plain HTTP from %d: %s", self.digest, offset,
                    reason)
        self.p2p.metrics.p2p_fallback(reason)
        self._off = True
        self._http_from = offset
        self.finish()

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        if not self._off:
            try:
                if self._swarm is None:
                    self.torrent = await self._metadata()
                    self._swarm = self.p2p.engine.join(self.digest.hex, self.torrent)
                    self.p2p.metrics.p2p_pull()
                    engine = self.p2p.engine
                    pieces = EdgePieces(self.plain, self._swarm, engine.credential_headers,
                                        engine.settings.claim_stall_seconds)
                    self._handout = asyncio.get_running_loop().create_task(pieces.run())
                return self._swarm.size, self._run(self._swarm, offset)
            except (NoMetadata, UpstreamFailure, UpstreamAnswer, NoUpstreamAvailable) as e:
                log.info("no p2p metadata for %s: %s", self.digest, e)
                self._fall_back("no_metadata", offset)
            except Exception:
                log.exception("joining the swarm of %s failed", self.digest)
                self._fall_back("error", offset)
        total, chunks = await self.plain.open(offset)
        return total, self._count_http(chunks)

    async def _count_http(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for data in chunks:
            self.p2p.metrics.p2p_bytes("edge_http", len(data))
            yield data

    async def _metadata(self) -> bytes:
        async def call(u: Upstream) -> bytes:
            path = with_ns(f"/v2/{u.repository(self.plain.repository)}/blobs/{self.digest}"
                           "/torrent", self.plain.ns)
            response = await u.request("GET", path, self.p2p.engine.credential_headers,
                                       self.plain.via)
            try:
                if response.status != 200:
                    raise NoMetadata(f"http_{response.status}")
                body = await read_limited(response, TORRENT_LIMIT)
            except ManifestTooLarge:
                raise NoMetadata("metadata too large") from None
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise UpstreamFailure(u.name, type(e).__name__) from e
            finally:
                response.release()
            return body
        return await self.plain.group.attempt(call)

    async def _run(self, swarm: Swarm, offset: int) -> AsyncIterator[bytes]:
        pos = offset
        progress, since = swarm.verified_bytes(), time.monotonic()
        # Reads of the verified pieces after the one being sent are in flight already: one
        # read at a time waited for the engine's disk thread and the alert pump per piece,
        # which at 512 pieces held the client's tail seconds behind the download.
        ahead = max(1, READ_AHEAD_BYTES // swarm.piece_length)
        reads: dict[int, asyncio.Future[bytes]] = {}
        while pos < swarm.size:
            piece = pos // swarm.piece_length
            for p in range(piece, min(piece + ahead, swarm.pieces)):
                if p not in reads:
                    if not swarm.have(p):
                        break
                    reads[p] = swarm.read_piece(p)
            if piece in reads:
                start = piece * swarm.piece_length
                try:
                    data = await asyncio.wait_for(asyncio.shield(reads.pop(piece)),
                                                  self.p2p.timeout)
                except TimeoutError:
                    log.warning("p2p read of piece %d of %s timed out", piece, self.digest)
                    self._fall_back("no_progress", pos)
                    raise UpstreamFailure("p2p", "read_timeout") from None
                if len(data) != min(swarm.piece_length, swarm.size - start):
                    raise UpstreamFailure("p2p", "short_piece")
                for cut in range(pos - start, len(data), READ):
                    yield data[cut:cut + READ]
                pos = start + len(data)
                since = time.monotonic()
                continue
            swarm.want_from(piece)
            done = swarm.verified_bytes()
            if done != progress:
                progress, since = done, time.monotonic()
            elif time.monotonic() - since > self.p2p.timeout:
                self._fall_back("no_progress", pos)
                raise UpstreamFailure("p2p", "no_progress")
            await asyncio.sleep(POLL)
        swarm.sample()

    def finish(self, published: Path | None = None) -> None:
        """Leave the swarm (given up), or seed on from the published blob; count and log
        where the bytes came from."""
        if self._handout is not None:
            self._handout.cancel()
        if self._counted:
            return
        self._counted = True
        engine = self.p2p.engine
        counters = (engine.complete(self.digest.hex, published) if published is not None
                    else engine.leave(self.digest.hex))
        if counters is None:
            return
        m = self.p2p.metrics
        m.p2p_bytes("peers", counters.from_peers)
        m.p2p_bytes("edge_pieces", counters.from_edge)
        m.p2p_reject(counters.rejected)
        self.p2p.remember(self.digest.hex, {
            "size": self._swarm.size if self._swarm is not None else None,
            "from_peers": counters.from_peers, "from_edge": counters.from_edge,
            "http_from": self._http_from, "uploaded": counters.uploaded,
            "rejected": counters.rejected})
        log.info("p2p pull of %s: %d bytes from peers, %d handed out by the edge, plain "
                 "HTTP from %s, %d uploaded, %d rejected, %d peers", self.digest,
                 counters.from_peers, counters.from_edge, self._http_from, counters.uploaded,
                 counters.rejected, counters.peers)
