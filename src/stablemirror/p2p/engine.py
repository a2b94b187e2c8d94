"""A node's libtorrent session: join a blob's swarm, read verified pieces, seed after.

One session per node process (config.py refuses p2p with more than one worker: they would
share one listen port). libtorrent checks every piece against the torrent's SHA-256 Merkle
tree (v2) before `have_piece` is true; a peer whose data fails the check is banned by the
engine (smart ban), so only verified pieces are ever read here. Downloads live under
`<data>/p2p/downloads/`, one file per blob named by its hex digest; once the mirror has
published the blob (whole-blob SHA-256 checked) the download is dropped and the published
file is seeded in place for `seed_seconds`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from stablemirror.p2p.config import P2PSettings
from stablemirror.p2p.credential import query, sign

log = logging.getLogger("stablemirror.p2p")
PUMP_SECONDS = 0.01


@dataclass
class SwarmCounters:
    """What one blob's torrent moved, for metrics and `status`."""
    from_peers: int = 0
    from_edge: int = 0  # handed out by the edge (or through a web seed)
    uploaded: int = 0
    rejected: int = 0  # failed the piece hash check: discarded, the sender banned
    peers: int = 0


class Swarm:
    def __init__(self, handle: lt.torrent_handle, info: lt.torrent_info, path: Path,
                 read: Callable[[Swarm, int], asyncio.Future[bytes]], window: int) -> None:
        self._read = read
        self.window = window  # pieces after the read position asked for first
        self.handle = handle
        self.info = info
        self.path = path  # where libtorrent writes the blob
        self.size = info.total_size()
        self.piece_length = info.piece_length()
        self.counters = SwarmCounters()
        self._head = -1
        self._done = -1  # verified bytes when last looked at, and since when
        self._since = time.monotonic()

    def have(self, piece: int) -> bool:
        return bool(self.handle.have_piece(piece))

    def want_from(self, piece: int) -> None:
        """Deadlines for the pieces right after the read position; rarest-first elsewhere."""
        if piece == self._head:
            return
        self._head = piece
        last = min(piece + self.window, self.info.num_pieces())
        for i, p in enumerate(range(piece, last)):
            if not self.have(p):
                self.handle.set_piece_deadline(p, 200 * (i + 1))

    def verified_bytes(self) -> int:
        return int(self.handle.status().total_wanted_done)

    def peer_bytes(self) -> int:
        """Payload received from peers (not the edge's parts nor a web seed)."""
        return int(self.handle.status().total_payload_download)

    @property
    def pieces(self) -> int:
        return int(self.info.num_pieces())

    def complete(self) -> bool:
        return self.verified_bytes() >= self.size

    def idle_seconds(self) -> float:
        """Seconds since the verified bytes last grew (whoever sent them)."""
        done, now = self.verified_bytes(), time.monotonic()
        if done != self._done:
            self._done, self._since = done, now
        return now - self._since

    def add_piece(self, piece: int, data: bytes) -> None:
        """A piece fetched from the edge: libtorrent checks it against the torrent's hashes
        before it has it (and tells its peers); a piece that fails is dropped."""
        self.handle.add_piece(piece, data, 0)

    def missing_runs(self, limit: int) -> list[tuple[int, int]]:
        """The first `limit` runs of pieces not verified yet, as inclusive (first, last)."""
        have = list(self.handle.status(lt.status_flags_t.query_pieces).pieces)
        runs: list[tuple[int, int]] = []
        start = None
        for p, got in enumerate(have):
            if got and start is not None:
                runs.append((start, p - 1))
                start = None
                if len(runs) >= limit:
                    return runs
            elif not got and start is None:
                start = p
        if start is not None:
            runs.append((start, len(have) - 1))
        return runs[:limit]

    def sample(self) -> None:
        """Bytes by origin. The session leaves web-seed bytes and pieces given with
        `add_piece` out of the payload counters (`report_web_seed_downloads` off), so those
        count peers only; the edge supplied the rest of what is verified."""
        status = self.handle.status()
        c = self.counters
        c.peers = int(status.num_peers)
        c.uploaded = int(status.total_payload_upload)
        c.rejected = int(status.total_failed_bytes)
        c.from_peers = int(status.total_payload_download)
        c.from_edge = max(int(status.total_wanted_done) - c.from_peers, 0)

    def read_piece(self, piece: int) -> asyncio.Future[bytes]:
        """A verified piece's bytes, through the engine's disk layer: `have_piece` can be
        true while the piece still sits in libtorrent's store buffer, not yet in the file."""
        return self._read(self, piece)


class NodeEngine:
    def __init__(self, settings: P2PSettings, node: str, directory: Path) -> None:
        self.settings = settings
        self.node = node
        self.downloads = directory / "downloads"
        self._session: lt.session | None = None
        # hex digest -> (handle, seed until, whether its files under downloads/ are ours)
        self._seeding: dict[str, tuple[lt.torrent_handle, float, bool]] = {}
        self._task: asyncio.Task[None] | None = None
        self.swarms: dict[str, Swarm] = {}  # blobs being pulled now, by hex digest
        self._reads: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._pump: asyncio.Task[None] | None = None

    def _read(self, swarm: Swarm, piece: int) -> asyncio.Future[bytes]:
        key = (swarm.info.name(), piece)
        future = self._reads.get(key)
        if future is None:
            future = self._reads[key] = asyncio.get_running_loop().create_future()
            swarm.handle.read_piece(piece)
        return future

    async def _alerts(self) -> None:
        """Hands read_piece_alerts to the reads waiting for them."""
        while True:
            await asyncio.sleep(PUMP_SECONDS)
            if self._session is None:
                continue
            for alert in self._session.pop_alerts():
                if isinstance(alert, lt.read_piece_alert):
                    try:
                        self._piece_read(alert)
                    except Exception:  # one bad alert must not stop every later read
                        log.exception("read_piece_alert %s", alert.message())

    def _piece_read(self, alert: lt.read_piece_alert) -> None:
        future = self._reads.pop((str(alert.torrent_name), int(alert.piece)), None)
        if future is None or future.done():
            log.debug("read of piece %s of %s: nobody waits", alert.piece, alert.torrent_name)
            return
        if alert.error.value() != 0:
            future.set_exception(OSError(alert.error.value(), alert.error.message()))
        else:
            future.set_result(bytes(alert.buffer)[: alert.size])

    def _credential(self) -> str:
        secret = self.settings.secret
        assert secret is not None  # P2PSettings refuses enabled without one
        return query(secret.get_secret_value(), self.settings.cluster, self.node)

    @property
    def credential_headers(self) -> dict[str, str]:
        secret = self.settings.secret
        assert secret is not None
        return {"X-Stablemirror-P2P-Cluster": self.settings.cluster,
                "X-Stablemirror-P2P-Node": self.node,
                "X-Stablemirror-P2P-Sig": sign(secret.get_secret_value(),
                                               self.settings.cluster, self.node)}

    def start(self) -> None:
        s = self.settings
        self.downloads.mkdir(parents=True, exist_ok=True)
        # what a crashed process left: pieces not all verified, or links of seeded blobs;
        # a pull never resumes from them (the fetch's own .part is the resume point)
        for leftover in self.downloads.iterdir():
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink(missing_ok=True)
        self._session = lt.session({
            "listen_interfaces": s.listen, "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False,
            # peers of a cluster may share an address (tests, NAT); the tracker is ours
            "allow_multiple_connections_per_ip": True, "ssrf_mitigation": False,
            # TCP only: uTP's delay-based congestion control (LEDBAT) backs off behind any
            # queue on a shaped link, and inside a cluster there is nobody to yield to
            "enable_outgoing_utp": False, "enable_incoming_utp": False,
            "report_web_seed_downloads": False,  # see Swarm.sample
            "urlseed_wait_retry": 2,  # a web seed that failed once is retried soon
            "min_announce_interval": 1,  # our tracker's interval (p2p.announce_seconds)
            "upload_rate_limit": s.upload_limit, "download_rate_limit": s.download_limit,
            "connections_limit": s.max_peers * 4,
            "alert_mask": lt.alert.category_t.storage_notification
            | lt.alert.category_t.error_notification,
            "user_agent": "stablemirror", "peer_fingerprint": "-SM0001-"})
        self._task = asyncio.get_running_loop().create_task(self._housekeeping())
        self._pump = asyncio.get_running_loop().create_task(self._alerts())

    def _add(self, torrent: bytes, save: Path, seed: bool) -> tuple[lt.torrent_handle,
                                                                     lt.torrent_info]:
        assert self._session is not None, "NodeEngine.start() first"
        info = lt.torrent_info(torrent)
        atp = lt.add_torrent_params()
        atp.ti = info
        atp.save_path = str(save)
        atp.max_connections = self.settings.max_peers
        atp.flags |= lt.torrent_flags.override_trackers
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if seed:
            atp.flags |= lt.torrent_flags.seed_mode
            atp.url_seeds = []
            atp.flags |= lt.torrent_flags.override_web_seeds
        atp.trackers = [f"{t.url}?{self._credential()}" for t in info.trackers()]
        return self._session.add_torrent(atp), info

    def join(self, hex_digest: str, torrent: bytes) -> Swarm:
        """Start (or rejoin) pulling a blob's pieces into the downloads directory."""
        handle, info = self._add(torrent, self.downloads, seed=False)
        swarm = Swarm(handle, info, self.downloads / info.files().file_path(0), self._read,
                      self.settings.stream_window)
        stripes = self.settings.stripes
        if stripes > 1:
            # Nodes that start together would otherwise all want the same pieces, which only
            # the web-seeded node has: nobody would have anything the others lack. Each node
            # asks first for its own stripe (by its id), so they trade (docs/p2p.md).
            mine = int(hashlib.sha256(self.node.encode()).hexdigest(), 16) % stripes
            handle.prioritize_pieces([7 if p % stripes == mine else 4
                                      for p in range(info.num_pieces())])
        self.swarms[hex_digest] = swarm
        return swarm

    def leave(self, hex_digest: str) -> SwarmCounters | None:
        """Stop pulling; the downloaded pieces are deleted (the mirror has its own copy)."""
        swarm = self.swarms.pop(hex_digest, None)
        if swarm is None or self._session is None:
            return None
        swarm.sample()
        self._session.remove_torrent(swarm.handle, lt.session.delete_files)
        return swarm.counters

    def complete(self, hex_digest: str, published: Path) -> SwarmCounters | None:
        """The pull is published: the same torrent seeds on, without a pause. Its file's
        name becomes a hard link to the published blob (same bytes, verified), so the
        download's own copy goes as soon as libtorrent lets go of it; moving libtorrent's
        storage instead would recheck every piece and drop the peers meanwhile."""
        swarm = self.swarms.pop(hex_digest, None)
        if swarm is None or self._session is None:
            return None
        swarm.sample()
        if self.settings.seed_seconds <= 0 or hex_digest in self._seeding:
            self._session.remove_torrent(swarm.handle, lt.session.delete_files)
            return swarm.counters
        link = swarm.path.with_name(swarm.path.name + ".link")
        try:
            link.unlink(missing_ok=True)
            os.link(published, link)
            os.replace(link, swarm.path)
        except OSError:  # another filesystem: the download seeds as it is, then goes
            link.unlink(missing_ok=True)
        until = time.monotonic() + self.settings.seed_seconds
        self._seeding[hex_digest] = (swarm.handle, until, True)
        return swarm.counters

    def seed(self, hex_digest: str, torrent: bytes, published: Path) -> None:
        """Seed the published blob file where it lies, for `seed_seconds`."""
        if self.settings.seed_seconds <= 0 or hex_digest in self._seeding:
            return
        handle, _ = self._add(torrent, published.parent, seed=True)
        self._seeding[hex_digest] = (handle, time.monotonic() + self.settings.seed_seconds,
                                     False)

    def seeding(self) -> dict[str, lt.torrent_handle]:
        return {k: h for k, (h, _, _) in self._seeding.items()}

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key, (handle, until, own) in list(self._seeding.items()):
                if now > until or handle.status().errc.value() != 0:
                    del self._seeding[key]
                    self._drop(handle, own)

    def _drop(self, handle: lt.torrent_handle, own_files: bool) -> None:
        """Stop seeding; a download's name goes too (never a published blob's)."""
        if self._session is not None:
            if own_files:
                self._session.remove_torrent(handle, lt.session.delete_files)
            else:
                self._session.remove_torrent(handle)

    async def aclose(self) -> None:
        for task in (self._task, self._pump):
            if task is not None:
                task.cancel()
        for future in self._reads.values():
            future.cancel()
        for key in list(self.swarms):
            self.leave(key)
        if self._session is not None:
            for handle, _, own in self._seeding.values():
                self._drop(handle, own)
            self._seeding.clear()
            self._session = None
