"""Metrics of P2P piece sharing between node caches (a part of `Metrics`;
mirror/p2p_source.py, p2p/engine.py; docs/p2p.md). No digest is a label: per-blob numbers
are in the node's log line at the end of each pull and in its `GET /p2p/status`."""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from stablemirror.metrics.labels import PREFIX

P2PFallback = Literal["no_metadata", "no_progress", "digest_mismatch", "error"]
P2POrigin = Literal["peers", "edge_pieces", "edge_http"]


class P2PMetrics:
    def _declare_p2p(self, r: CollectorRegistry) -> None:
        self.p2p_pulls = Counter(f"{PREFIX}p2p_pulls_total",
                                 "Blob misses a node pulled through its cluster's swarm.",
                                 registry=r)
        self.p2p_received = Counter(
            f"{PREFIX}p2p_received_bytes_total",
            "Blob bytes of P2P pulls, by origin: other nodes (peers), parts the edge handed "
            "out to this node (edge_pieces), the edge by plain HTTP after a fallback.",
            ["origin"], registry=r)
        self.p2p_uploaded = Counter(f"{PREFIX}p2p_uploaded_bytes_total",
                                    "Blob bytes this node sent to peers.", registry=r)
        self.p2p_rejected = Counter(
            f"{PREFIX}p2p_rejected_bytes_total",
            "Bytes from peers that failed the piece hash check (discarded; the peer is "
            "banned).", registry=r)
        self.p2p_fallbacks = Counter(
            f"{PREFIX}p2p_fallbacks_total",
            "P2P pulls that went on by plain HTTP from the edge, by reason.", ["reason"],
            registry=r)
        self.p2p_peers = Gauge(f"{PREFIX}p2p_swarm_peers",
                               "Peers connected, over every blob this node pulls or seeds.",
                               multiprocess_mode="mostrecent", registry=r)
        self.p2p_torrents = Gauge(f"{PREFIX}p2p_torrents",
                                  "Blobs in a swarm on this node, by state.", ["state"],
                                  multiprocess_mode="mostrecent", registry=r)
        for origin in get_args(P2POrigin):
            self.p2p_received.labels(origin)
        for reason in get_args(P2PFallback):
            self.p2p_fallbacks.labels(reason)
        for state in ("pulling", "seeding"):
            self.p2p_torrents.labels(state)

    def p2p_pull(self) -> None:
        self.p2p_pulls.inc()

    def p2p_bytes(self, origin: P2POrigin, n: int) -> None:
        if n > 0:
            self.p2p_received.labels(origin).inc(n)

    def p2p_upload(self, n: int) -> None:
        if n > 0:
            self.p2p_uploaded.inc(n)

    def p2p_reject(self, n: int) -> None:
        if n > 0:
            self.p2p_rejected.inc(n)

    def p2p_fallback(self, reason: P2PFallback) -> None:
        self.p2p_fallbacks.labels(reason).inc()

    def p2p_swarms(self, peers: int, pulling: int, seeding: int) -> None:
        self.p2p_peers.set(peers)
        self.p2p_torrents.labels("pulling").set(pulling)
        self.p2p_torrents.labels("seeding").set(seeding)
