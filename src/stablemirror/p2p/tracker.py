"""The swarm's HTTP tracker at the edge (BEP 3 announce, BEP 23 compact peers).

Peers are kept as files, one per (info hash, cluster, peer address), their mtime the last
announce: every worker of the edge answers announces, and any of them sees the same swarm.
A peer that stops announcing expires after three intervals (its owner is its address, its
expiry the mtime). Only torrents this tier made are tracked (metadata.TorrentCache.known),
only credentialed nodes are admitted (credential.py), and a peer list holds peers of the
announcing node's own cluster only.

Web-seed hand-out: so the edge sends a blob about once per cluster, only `web_seed_nodes`
nodes of a cluster get the web seed in the metadata at a time (lease files with an expiry);
the others take pieces from them and from each other, and a node that makes no progress
falls back to plain HTTP (mirror/p2p_source.py).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from stablemirror.p2p.state_dirs import entries, locked, remove_idle, subdirs

_CLUSTER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AnnounceRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Announce:
    info_hash: str  # 40 hex digits
    cluster: str
    node: str
    sig: str
    port: int
    event: str
    left: int


def parse_announce(raw_query: str) -> Announce:
    """The announce's parameters; info_hash is binary, so the raw query is decoded here."""
    fields: dict[str, bytes] = {}
    for part in raw_query.split("&"):
        key, _, value = part.partition("=")
        if key:
            fields[key] = unquote_to_bytes(value.replace("+", " "))
    text = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != "info_hash"}
    info_hash = fields.get("info_hash", b"")
    if len(info_hash) != 20:
        raise AnnounceRefused("bad info_hash")
    try:
        port = int(text.get("port", ""))
        left = int(text.get("left", "0"))
    except ValueError:
        raise AnnounceRefused("bad port") from None
    if not 0 < port < 65536:
        raise AnnounceRefused("bad port")
    cluster = text.get("cluster", "")
    if not _CLUSTER.match(cluster):
        raise AnnounceRefused("bad cluster")
    return Announce(info_hash.hex(), cluster, text.get("node", ""), text.get("sig", ""),
                    port, text.get("event", ""), left)


WEB_SEED = "web-seed"  # beside the swarms: the web-seed leases of each blob and cluster
WEB_SEED_IDLE_SECONDS = 24 * 3600


class Swarms:
    def __init__(self, directory: Path, interval: int) -> None:
        self.directory = directory
        self.interval = interval

    def _dir(self, info_hash: str, cluster: str) -> Path:
        return self.directory / info_hash / cluster

    def announce(self, a: Announce, address: str, now: float | None = None
                 ) -> tuple[list[tuple[str, int]], int, int]:
        """Record the peer; return the other live peers of its cluster, seeds, leechers."""
        ip = ipaddress.ip_address(address)
        where = self._dir(a.info_hash, a.cluster)
        mine = where / f"{ip}_{a.port}_{'s' if a.left == 0 else 'l'}"
        for _ in range(3):  # remove_idle may take the directory while it is empty
            try:
                where.mkdir(parents=True, exist_ok=True)
                for stale in where.glob(f"{ip}_{a.port}_*"):
                    if stale != mine:
                        stale.unlink(missing_ok=True)
                if a.event == "stopped":
                    mine.unlink(missing_ok=True)
                else:
                    mine.touch()
                    os.utime(mine, (now, now) if now is not None else None)
                break
            except (FileNotFoundError, FileExistsError):  # state_dirs.py _lock: the same race
                continue
        peers, seeds, leechers = [], 0, 0
        oldest = (now if now is not None else time.time()) - 3 * self.interval
        for entry in entries(where):  # none: the last one stopped and remove_idle took it
            try:
                fresh = entry.stat().st_mtime >= oldest
            except FileNotFoundError:
                continue
            if not fresh:
                entry.unlink(missing_ok=True)
                continue
            host, port, state = entry.name.rsplit("_", 2)
            seeds += state == "s"
            leechers += state == "l"
            if entry != mine:
                peers.append((host, int(port)))
        return peers, seeds, leechers

    def remove_idle(self, now: float | None = None) -> int:
        """Drop the peers not heard of for three announce intervals, and every swarm
        directory left empty by that, and web-seed leases of a day ago; returns how many
        directories went. (Announces drop their own swarm's stale peers; this is for the
        swarms nobody announces to.)"""
        now = time.time() if now is None else now
        oldest = now - 3 * self.interval
        # web-seed leases untouched for a day: long expired (state_dirs.py)
        removed = remove_idle(self.directory / WEB_SEED, WEB_SEED_IDLE_SECONDS, now)
        for by_hash in subdirs(self.directory):
            if by_hash.name == WEB_SEED:
                continue  # leases, not peers (take_web_seed)
            for where in subdirs(by_hash):
                for entry in entries(where):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < oldest:
                            entry.unlink()
                with contextlib.suppress(OSError):  # only an empty one goes
                    where.rmdir()
                    removed += 1
            with contextlib.suppress(OSError):
                by_hash.rmdir()
        return removed

    def swarm_size(self, info_hash: str, cluster: str) -> int:
        where = self._dir(info_hash, cluster)
        oldest = time.time() - 3 * self.interval
        try:
            return sum(1 for e in where.iterdir() if e.stat().st_mtime >= oldest)
        except FileNotFoundError:
            return 0

    def take_web_seed(self, hex_digest: str, cluster: str, node: str, slots: int,
                      lease_seconds: float) -> bool:
        """Whether `node` gets the web seed of this blob now (it holds or takes a lease)."""
        leases = self.directory / WEB_SEED / hex_digest / cluster
        # One request at a time per blob and cluster, across threads and workers: without
        # it, a request that saw no lease unlinked (as expired) the one another had just
        # made and took its own, and two nodes got the web seed (two copies from the edge).
        # The flock is released at the end, or when the worker dies (state_dirs.py).
        with locked(leases):
            return self._take_slot(leases, node, slots, lease_seconds)

    @staticmethod
    def _take_slot(leases: Path, node: str, slots: int, lease_seconds: float) -> bool:
        now = time.time()
        for slot in range(slots):
            lease = leases / str(slot)
            try:
                holder = lease.read_text()
                expired = lease.stat().st_mtime + lease_seconds < now
            except FileNotFoundError:
                holder, expired = "", True
            if holder == node and not expired:
                return True
            if expired:
                lease.unlink(missing_ok=True)
                try:
                    fd = os.open(lease, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue  # another worker took it just now
                with os.fdopen(fd, "w") as f:
                    f.write(node)
                return True
        return False


def compact(peers: list[tuple[str, int]]) -> tuple[bytes, bytes]:
    v4, v6 = b"", b""
    for host, port in peers:
        ip = ipaddress.ip_address(host)
        if ip.version == 4:
            v4 += socket.inet_aton(host) + struct.pack("!H", port)
        else:
            v6 += ip.packed + struct.pack("!H", port)
    return v4, v6


def response(peers: list[tuple[str, int]], seeds: int, leechers: int, interval: int) -> bytes:
    v4, v6 = compact(peers)
    body: dict[bytes, object] = {b"interval": interval, b"min interval": 1,
                                 b"complete": seeds, b"incomplete": leechers, b"peers": v4}
    if v6:
        body[b"peers6"] = v6
    import libtorrent as lt  # loaded on the first announce, not at start-up

    return lt.bencode(body)


def failure(reason: str) -> bytes:
    import libtorrent as lt

    return lt.bencode({b"failure reason": reason.encode()})


