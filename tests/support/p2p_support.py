"""Real libtorrent sessions and p2p settings for the P2P tests (tests/*/p2p/)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import libtorrent as lt
import requests

from stablemirror.p2p.credential import query
from stablemirror.p2p.credential import sign as sign_credential

SECRET = "cluster-secret"


def credential_headers(node: str, cluster: str = "c1", secret: str = SECRET
                       ) -> dict[str, str]:
    return {"X-Stablemirror-P2P-Cluster": cluster, "X-Stablemirror-P2P-Node": node,
            "X-Stablemirror-P2P-Sig": sign_credential(secret, cluster, node)}


def get_torrent(base: str, repo: str, digest: str, node: str, **kw: str
                ) -> requests.Response:
    return requests.get(f"{base}/v2/{repo}/blobs/{digest}/torrent",
                        headers=credential_headers(node, **kw), timeout=30)


def session(port: int) -> lt.session:
    return lt.session({
        "listen_interfaces": f"127.0.0.1:{port}", "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True, "ssrf_mitigation": False,
        "alert_mask": 0})


def add(s: lt.session, torrent: bytes, save: Path, node: str, cluster: str = "c1",
        secret: str = SECRET, seed: bool = False) -> lt.torrent_handle:
    ti = lt.torrent_info(torrent)
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = str(save)
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode
    atp.trackers = [f"{t.url}?{query(secret, cluster, node)}" for t in ti.trackers()]
    atp.flags |= lt.torrent_flags.override_trackers
    return s.add_torrent(atp)


def wait_seeding(handles: list[lt.torrent_handle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(h.status().is_seeding for h in handles):
            return
        time.sleep(0.1)
    states: list[Any] = [(h.status().progress, str(h.status().state)) for h in handles]
    raise AssertionError(f"not complete within {timeout}s: {states}")
