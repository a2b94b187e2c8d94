"""Real libtorrent sessions and p2p settings for the P2P tests (tests/*/p2p/)."""

from __future__ import annotations

import json
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
        "urlseed_wait_retry": 2,
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


def edge_config(path: Path, **p2p: Any) -> Path:
    path.write_text(json.dumps({"p2p": {"clusters": {"c1": SECRET}, "announce_seconds": 1,
                                        **p2p}}))
    return path


def node_config(path: Path, edge_url: str, name: str, listen: str, **p2p: Any) -> Path:
    """A node cache of cluster c1 pulling through `edge_url`, its swarm on `listen`."""
    path.write_text(json.dumps({
        "role": "node", "upstream": [edge_url],
        "mirror": {"node_id": name},
        "p2p": {"enabled": True, "cluster": "c1", "secret": SECRET, "listen": listen,
                "no_progress_seconds": 4, "min_piece_bytes": 256 * 1024, **p2p}}))
    return path


def metric_value(base: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, from /metrics."""
    total = 0.0
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] == name and all(
                f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def wait_metric(base: str, name: str, at_least: float, timeout: float = 10.0,
                **labels: str) -> float:
    """The metric once it reaches `at_least` (counters a node updates right after its
    publish, which may come after the client's last byte), else its last value."""
    deadline = time.monotonic() + timeout
    value = metric_value(base, name, **labels)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric_value(base, name, **labels)
    return value
