"""Decentralized edges (issue 15, seed §6): the edges of a region form a swarm among
themselves for blobs they miss from the center, with the same mechanism as node caches
(`p2p.enabled` on an edge, `p2p.clusters` on the center). Two real edges pull one blob from
a real center at once: each gets the right bytes, the center sends the blob about once, and
the edges took the rest from each other."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.live import LiveServer, free_port
from tests.support.mirror_support import push_blob
from tests.support.p2p_support import SECRET, metric_value, wait_metric

MiB = 1 << 20
RECEIVED = "stablemirror_p2p_received_bytes_total"
SERVED = "stablemirror_blob_bytes_served_total"


def _edge_config(path: Path, center: str, name: str) -> Path:
    path.write_text(json.dumps({
        "role": "edge", "upstream": [center], "workers": 1, "mirror": {"node_id": name},
        "p2p": {"enabled": True, "cluster": "region-a", "secret": SECRET,
                "listen": f"127.0.0.1:{free_port()}", "no_progress_seconds": 8}}))
    return path


def test_edges_of_a_region_share_a_blob_they_miss_from_the_center(
        tmp_path: Path, server_factory: Callable[..., LiveServer]) -> None:
    center_cfg = tmp_path / "center.yml"
    center_cfg.write_text(json.dumps({"p2p": {"clusters": {"region-a": SECRET},
                                              "announce_seconds": 1}}))
    center = server_factory("--config", str(center_cfg))
    edges = [server_factory("--config", str(_edge_config(tmp_path / f"e{i}.yml",
                                                         center.url, f"edge-{i}")))
             for i in range(2)]
    data = os.urandom(24 * MiB)  # six parts of 4 MiB to hand out
    digest = push_blob(center.url, "lib/model", data)
    served_before = metric_value(center.url, SERVED)

    def pull(edge: LiveServer) -> str:
        r = requests.get(f"{edge.url}/v2/lib/model/blobs/{digest}", timeout=120)
        assert r.status_code == 200, (r.status_code, edge.log_path.read_text()[-2000:])
        return "sha256:" + hashlib.sha256(r.content).hexdigest()

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(pull, edges)) == [digest, digest]
    from_peers = sum(wait_metric(e.url, RECEIVED, 1, origin="peers") for e in edges)
    served = metric_value(center.url, SERVED) - served_before
    assert served <= 1.25 * len(data), (served, from_peers)  # naive: 2x
    assert from_peers >= 0.75 * len(data), (served, from_peers)
    for edge in edges:
        assert metric_value(edge.url, "stablemirror_p2p_fallbacks_total") == 0
