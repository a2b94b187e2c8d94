"""One edge and four node caches, each a real stablemirror process in its own network
namespace on one bridge (tests/support/netns.py), the edge's uplink shaped with tc tbf:
four nodes pulling one blob at once (every node's bytes verified, the edge's egress counted
on its veth), one node alone (every part handed out to it by the edge), a node whose P2P
port is blocked (the edge hands it the parts again), a peer whose stored pieces were
flipped (its bad pieces are rejected), and
`stablemirror preheat` warming all four with an image at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.support.mirror_support import blob_files, push_blob, push_new_image
from tests.support.netns import Bridge, NetnsServer
from tests.support.netns_cluster import flip_stored_pieces
from tests.support.p2p_support import edge_config, metric_value, node_config, wait_metric

MiB = 1 << 20
NODES = 4
P2P_PORT = 6881
RECEIVED = "stablemirror_p2p_received_bytes_total"


@dataclass
class Cluster:
    bridge: Bridge
    edge: NetnsServer
    nodes: list[NetnsServer]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("netns")
    bridge = Bridge()
    servers: list[NetnsServer] = []
    try:
        ns, address = bridge.host(1)
        bridge.shape(ns, "400mbit")
        edge = NetnsServer(ns, address, root / "edge", "--config",
                           str(edge_config(root / "edge.yml")))
        servers.append(edge)
        nodes = []
        for n in range(NODES):
            ns, address = bridge.host(10 + n)
            cfg = node_config(root / f"n{n}.yml", edge.url, f"n{n}", f"0.0.0.0:{P2P_PORT}",
                              stripes=8,  # p2p.stripes exercised here
                              claim_stall_seconds=1.5,
                              # a loaded CI machine once starved a node past 4 s
                              no_progress_seconds=8)
            nodes.append(NetnsServer(ns, address, root / f"n{n}", "--config", str(cfg)))
        servers.extend(nodes)
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(30), servers))
        yield Cluster(bridge, edge, nodes)
    finally:
        with ThreadPoolExecutor(len(servers) or 1) as pool:
            list(pool.map(lambda s: s.stop(), servers))
        bridge.close()


def _pull(node: NetnsServer, digest: str) -> str:
    try:
        r = requests.get(f"{node.url}/v2/lib/blob/blobs/{digest}", timeout=60)
    except requests.RequestException as e:
        raise AssertionError(f"{e}: {node.log()[-3000:]}") from e
    assert r.status_code == 200, (r.status_code, r.text[:200], node.log()[-2000:])
    return "sha256:" + hashlib.sha256(r.content).hexdigest()


def _blob(cluster: Cluster, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return push_blob(cluster.edge.url, "lib/blob", data), data


def _settled_status(url: str, digest: str) -> dict[str, Any]:
    """The node's `/p2p/status` entry for `digest` once its pull has ended: a node's
    publish (and with it the switch from pulling to seeding) may trail its client's last
    byte, and more than one node may still be publishing when the pulls return."""
    blob: dict[str, Any] = {}
    for _ in range(100):  # bounded: 10 s
        blob = next(b for b in requests.get(f"{url}/p2p/status", timeout=10).json()["blobs"]
                    if b["digest"] == digest)
        if blob["state"] != "pulling":
            break
        time.sleep(0.1)
    return blob


def test_four_nodes_pull_one_blob_at_once(cluster: Cluster) -> None:
    digest, data = _blob(cluster, 16 * MiB)
    before = cluster.bridge.sent_by(1)
    with ThreadPoolExecutor(NODES) as pool:
        got = list(pool.map(lambda n: _pull(n, digest), cluster.nodes))
    egress = cluster.bridge.sent_by(1) - before
    assert got == [digest] * NODES
    wanted = (NODES - 2) * len(data)
    for _ in range(50):  # each node counts after its publish, which may trail its client
        from_peers = sum(metric_value(n.url, RECEIVED, origin="peers") for n in cluster.nodes)
        if from_peers >= wanted:
            break
        time.sleep(0.1)
    # naive: NODES x the blob; here about once, plus headers and the tracker
    why = (egress, from_peers, [metric_value(n.url, "stablemirror_p2p_fallbacks_total")
                                for n in cluster.nodes])
    assert egress <= 1.5 * len(data), why
    assert from_peers >= wanted, why
    for node in cluster.nodes:  # per blob: every byte came from the peers or the edge
        blob = _settled_status(node.url, digest)
        assert blob["state"] == "seeding" and blob["size"] == len(data), blob
        assert blob["from_peers"] + blob["from_edge"] == len(data), blob


def test_a_node_alone_completes_from_the_edge_s_parts(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    digest, data = _blob(cluster, 6 * MiB)  # two parts of 4 MiB
    edge_before = metric_value(node.url, RECEIVED, origin="edge_pieces")
    fallbacks = metric_value(node.url, "stablemirror_p2p_fallbacks_total")
    assert _pull(node, digest) == digest
    assert wait_metric(node.url, RECEIVED, edge_before + len(data),
                       origin="edge_pieces") >= edge_before + len(data)
    assert metric_value(node.url, "stablemirror_p2p_fallbacks_total") == fallbacks


def test_p2p_port_blocked_still_completes_from_the_edge(cluster: Cluster) -> None:
    first, blocked = cluster.nodes[0], cluster.nodes[3]
    digest, data = _blob(cluster, 12 * MiB)  # three parts
    assert _pull(first, digest) == digest  # every part handed out: the others need peers
    cluster.bridge.block_port(blocked.ns, P2P_PORT)
    try:
        before = {o: metric_value(blocked.url, RECEIVED, origin=o)
                  for o in ("peers", "edge_pieces", "edge_http")}
        fallbacks = metric_value(blocked.url, "stablemirror_p2p_fallbacks_total")
        assert _pull(blocked, digest) == digest
        wait_metric(blocked.url, RECEIVED, before["edge_pieces"] + len(data),
                    origin="edge_pieces")
        after = {o: metric_value(blocked.url, RECEIVED, origin=o) for o in before}
        assert after["peers"] == before["peers"]  # nothing came through the blocked port
        # stalled once (claim_stall_seconds), it took the parts again one after the other,
        # never idle long enough for the plain HTTP fallback (no_progress_seconds)
        assert after["edge_pieces"] - before["edge_pieces"] == len(data), (before, after)
        assert metric_value(blocked.url, "stablemirror_p2p_fallbacks_total") == fallbacks
    finally:
        cluster.bridge.block_port(blocked.ns, P2P_PORT, on=False)


def test_a_peer_with_flipped_pieces_is_rejected(cluster: Cluster) -> None:
    bad, good, other = cluster.nodes[0], cluster.nodes[1], cluster.nodes[2]
    digest, data = _blob(cluster, 8 * MiB)
    assert _pull(bad, digest) == digest  # web seed; it seeds its stored copy
    assert _pull(good, digest) == digest  # from `bad`, which checked each piece it sent
    assert flip_stored_pieces(bad, digest, data) >= 1
    cluster.bridge.block_port(good.ns, P2P_PORT)  # only the bad peer is left to ask
    try:
        rejected = metric_value(other.url, "stablemirror_p2p_rejected_bytes_total")
        assert _pull(other, digest) == digest
        assert wait_metric(other.url, "stablemirror_p2p_rejected_bytes_total",
                           rejected + 1) > rejected
    finally:
        cluster.bridge.block_port(good.ns, P2P_PORT, on=False)


def test_preheat_warms_every_node_at_once(cluster: Cluster) -> None:
    image = push_new_image(cluster.edge.url, "lib/img", "v1",
                           layer_sizes=(3 * MiB, 1 * MiB))
    pulls = [metric_value(n.url, "stablemirror_p2p_pulls_total") for n in cluster.nodes]
    done = subprocess.run(
        [sys.executable, "-m", "stablemirror", "preheat", f"{cluster.edge.host}/lib/img:v1",
         "--nodes", ",".join(n.host for n in cluster.nodes)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("1 manifest(s), 3 blob(s)") == NODES  # two layers, config
    for node, before in zip(cluster.nodes, pulls, strict=True):
        assert set(image.blobs) <= set(blob_files(node.data_dir))
        assert metric_value(node.url, "stablemirror_p2p_pulls_total") == before + 3
    shown = subprocess.run([sys.executable, "-m", "stablemirror", "status", "--url",
                            cluster.nodes[1].url], capture_output=True, text=True, timeout=60)
    assert "P2P (since start)" in shown.stdout and "rejected" in shown.stdout, shown.stdout
    assert "P2P per blob" in shown.stdout and "seeding" in shown.stdout, shown.stdout
