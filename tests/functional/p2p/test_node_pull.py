"""Node caches pulling blob misses through their cluster's swarm, real processes on
loopback: a swarm of one completes from the edge's web seed; two nodes pulling at once take
the blob from the edge about once; no metadata at the edge falls back to plain HTTP."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.live import LiveServer, free_port
from tests.support.mirror_support import push_blob
from tests.support.p2p_support import edge_config, metric_value, node_config

MiB = 1 << 20
ServerFactory = Callable[..., LiveServer]
SERVED = "stablemirror_blob_bytes_served_total"


def _node(server_factory: ServerFactory, tmp_path: Path, edge: LiveServer, name: str,
          **p2p: object) -> LiveServer:
    cfg = node_config(tmp_path / f"{name}.yml", edge.url, name, f"127.0.0.1:{free_port()}",
                      **p2p)
    return server_factory("--config", str(cfg))


def _pull(node: LiveServer, digest: str) -> str:
    r = requests.get(f"{node.url}/v2/lib/blob/blobs/{digest}", timeout=60)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    return "sha256:" + hashlib.sha256(r.content).hexdigest()


def test_one_node_completes_from_the_web_seed(server_factory: ServerFactory,
                                              tmp_path: Path) -> None:
    edge = server_factory("--config", str(edge_config(tmp_path / "edge.yml")))
    data = os.urandom(6 * MiB + 7)
    digest = push_blob(edge.url, "lib/blob", data)
    node = _node(server_factory, tmp_path, edge, "n1")
    assert _pull(node, digest) == digest
    assert metric_value(node.url, "stablemirror_p2p_pulls_total") == 1
    assert metric_value(node.url, "stablemirror_p2p_fallbacks_total") == 0
    assert metric_value(node.url, "stablemirror_p2p_received_bytes_total",
                        origin="edge_web_seed") >= len(data)
    assert _pull(node, digest) == digest  # now a local hit


def test_two_nodes_at_once_take_the_blob_from_the_edge_about_once(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    edge = server_factory("--config", str(edge_config(tmp_path / "edge.yml")))
    data = os.urandom(16 * MiB)
    digest = push_blob(edge.url, "lib/blob", data)
    nodes = [_node(server_factory, tmp_path, edge, f"n{i}") for i in range(2)]
    before = metric_value(edge.url, SERVED)
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda n: _pull(n, digest), nodes)) == [digest, digest]
    sent = metric_value(edge.url, SERVED) - before
    from_peers = sum(metric_value(n.url, "stablemirror_p2p_received_bytes_total",
                                  origin="peers") for n in nodes)
    assert sent <= 1.5 * len(data), (sent, from_peers)
    assert from_peers >= 0.5 * len(data)


def test_no_metadata_at_the_edge_falls_back_to_plain_http(server_factory: ServerFactory,
                                                          tmp_path: Path) -> None:
    edge = server_factory()  # no p2p.clusters: the torrent endpoint answers 404
    data = os.urandom(2 * MiB)
    digest = push_blob(edge.url, "lib/blob", data)
    node = _node(server_factory, tmp_path, edge, "n1")
    assert _pull(node, digest) == digest
    assert metric_value(node.url, "stablemirror_p2p_fallbacks_total",
                        reason="no_metadata") == 1
    assert metric_value(node.url, "stablemirror_p2p_received_bytes_total",
                        origin="edge_http") == len(data)
