"""Issue 15's check, with podman: an edge (a real stablemirror holding a pushed two-layer
image) and eight node caches, each a stablemirror process with P2P on in its own network
namespace, every uplink shaped with tc tbf (tests/support/netns_cluster.py); `podman pull`
runs inside every node's namespace at the same time, against the node's address there.

Black-box: what is checked is what a user sees (every pull succeeds with the pushed
manifest digest and image id, every node's stored blobs hash to their digests), the edge's
egress counted on its veth, and the bytes nodes report from peers; never how a node gets its
pieces from the edge. Then the same with P2P traffic blocked on every node (the pulls still
complete, nothing comes from peers) and with a peer whose stored pieces were flipped (its
corrupt pieces are rejected, every other node's pull is verified)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import BuiltImage, Clients
from tests.support.mirror_support import Image, layout_image, published_blobs, push_image
from tests.support.netns import NetnsServer
from tests.support.netns_cluster import (
    Cluster,
    block_p2p,
    flip_stored_pieces,
    netns_cluster,
    podman_pull_in_netns,
    sha256_file,
)
from tests.support.p2p_support import metric_value

# one worker gets the whole module under `--dist loadgroup` (one 8-node cluster, not two)
pytestmark = [pytest.mark.clients, pytest.mark.xdist_group("p2p-netns-podman")]

MiB = 1 << 20
NODES = 8
RECEIVED = "stablemirror_p2p_received_bytes_total"
REJECTED = "stablemirror_p2p_rejected_bytes_total"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with netns_cluster(tmp_path_factory.mktemp("netns-podman"), NODES,
                       edge_rate="200mbit", node_rate="400mbit") as c:
        yield c


@pytest.fixture(scope="module")
def podmans(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[Clients]]:
    """One podman per node: its own storage, configuration, and the node as its registry."""
    root = tmp_path_factory.mktemp("podmans")
    clients = [Clients(root / f"n{i}", node) for i, node in enumerate(cluster.nodes)]
    yield clients
    for c in clients:
        c.close()


def _push(cluster: Cluster, root: Path, repo: str, layer_sizes: tuple[int, ...]
          ) -> tuple[Image, BuiltImage]:
    # compresslevel 0: still gzip (podman unpacks it), quick to make, incompressible sizes
    image, built = layout_image(root, repo, "v1", layer_sizes=layer_sizes, compresslevel=0)
    push_image(cluster.edge.url, image)
    return image, built


def _pull_all(nodes: list[NetnsServer], podmans: list[Clients], repo: str
              ) -> list[dict[str, Any]]:
    """`podman pull` on every node at once, each inside its own namespace."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(lambda pair: podman_pull_in_netns(pair[1], pair[0], repo, "v1"),
                             zip(nodes, podmans, strict=True)))


def _assert_pulled(nodes: list[NetnsServer], inspected: list[dict[str, Any]], image: Image,
                   built: BuiltImage) -> None:
    """podman has the pushed image, and every node stored every blob of it intact."""
    for node, got in zip(nodes, inspected, strict=True):
        assert got["Digest"] == image.digest, (node.host, got["Digest"])
        assert got["Id"] == built.config.hex, (node.host, got["Id"])
        assert got["RootFS"]["Layers"] == built.diff_ids, node.host
        stored = published_blobs(node.data_dir, image.blobs)
        for digest in image.blobs:
            assert digest in stored, (node.host, digest, node.log()[-2000:])
            assert sha256_file(stored[digest]) == digest, (node.host, digest)


def _from_peers(nodes: list[NetnsServer]) -> float:
    return sum(metric_value(n.url, RECEIVED, origin="peers") for n in nodes)


def _fallbacks(nodes: list[NetnsServer]) -> float:
    return sum(metric_value(n.url, "stablemirror_p2p_fallbacks_total") for n in nodes)


def _sum_once_above(nodes: list[NetnsServer], name: str, floor: float, **labels: str
                    ) -> float:
    """The metric summed over `nodes` once it exceeds `floor` (a node counts after its
    publish, which may trail the client's last byte), else after 5 s its last sum."""
    total = floor
    for _ in range(50):
        total = sum(metric_value(n.url, name, **labels) for n in nodes)
        if total > floor:
            break
        time.sleep(0.1)
    return total


def test_eight_nodes_podman_pull_one_image_at_once(cluster: Cluster, podmans: list[Clients],
                                                   tmp_path: Path) -> None:
    image, built = _push(cluster, tmp_path, "lib/pod", (32 * MiB, 256 * 1024))
    peers_before = _from_peers(cluster.nodes)
    fallbacks_before = _fallbacks(cluster.nodes)
    sent_before = cluster.bridge.sent_by(1)
    inspected = _pull_all(cluster.nodes, podmans, "lib/pod")
    _assert_pulled(cluster.nodes, inspected, image, built)
    egress = cluster.bridge.sent_by(1) - sent_before
    from_peers = _sum_once_above(cluster.nodes, RECEIVED, peers_before, origin="peers"
                                 ) - peers_before
    seen = {"egress": egress, "image": image.size, "from_peers": from_peers,
            "fallbacks": _fallbacks(cluster.nodes) - fallbacks_before}  # to explain a failure
    # naive: eight copies of the image; here about one, plus headers, manifests, tracker
    assert egress <= 1.5 * image.size, seen
    assert from_peers > 0, seen


def test_podman_pulls_complete_with_p2p_traffic_blocked(cluster: Cluster,
                                                        podmans: list[Clients],
                                                        tmp_path: Path) -> None:
    image, built = _push(cluster, tmp_path, "lib/blocked", (1 * MiB,))
    block_p2p(cluster, cluster.nodes)
    try:
        peers_before = _from_peers(cluster.nodes)
        inspected = _pull_all(cluster.nodes, podmans, "lib/blocked")
        _assert_pulled(cluster.nodes, inspected, image, built)
        # the block held: no node got a byte from another
        assert _from_peers(cluster.nodes) == peers_before
    finally:
        block_p2p(cluster, cluster.nodes, on=False)


def test_podman_pulls_verified_with_a_peer_serving_corrupt_pieces(
        cluster: Cluster, podmans: list[Clients], tmp_path: Path) -> None:
    """Last in the module: the bad node's own store is corrupt afterwards."""
    image, built = _push(cluster, tmp_path, "lib/corrupt", (4 * MiB,))
    bad, rest = cluster.nodes[0], cluster.nodes[1:]
    _assert_pulled([bad], _pull_all([bad], podmans[:1], "lib/corrupt"), image, built)
    layer = image.layers[0]
    assert flip_stored_pieces(bad, layer, image.blobs[layer]) >= 1  # it seeds these now
    rejected_before = sum(metric_value(n.url, REJECTED) for n in rest)
    inspected = _pull_all(rest, podmans[1:], "lib/corrupt")
    _assert_pulled(rest, inspected, image, built)
    rejected = _sum_once_above(rest, REJECTED, rejected_before)
    assert rejected > rejected_before, rejected
