"""A node cache SIGKILLed in the middle of a swarm: an edge and four nodes in network
namespaces with shaped links (tests/support/netns_cluster.py) pull one blob at once. The
node that asked first (the one most likely to be getting the edge's bytes for the others)
is killed once its client has a quarter of the blob and it has not published it; the other nodes
all complete with verified bytes; restarted on the same data directory, the killed node
completes with verified bytes too. Black-box: nothing here depends on how a node gets its
pieces from the edge."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.mirror_support import (
    assert_blob_files_intact,
    blob_files,
    published_blobs,
    push_blob,
)
from tests.support.netns_cluster import (
    Cluster,
    netns_cluster,
    pull_blob_digest,
    read_at_least,
    sha256_file,
)

MiB = 1 << 20
NODES = 4
REPO = "lib/blob"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with netns_cluster(tmp_path_factory.mktemp("netns-kill"), NODES,
                       edge_rate="50mbit", node_rate="1gbit") as c:
        yield c


def test_a_node_killed_mid_swarm(cluster: Cluster) -> None:
    # The edge's link is the narrow one: the blob takes >= 2 s to enter the swarm, while
    # the victim's client reads at up to 1 Gbit/s, so a quarter read comes well before the
    # victim could have the whole blob (checked: it has not published it).
    data = os.urandom(12 * MiB)
    digest = push_blob(cluster.edge.url, REPO, data)
    victim, others = cluster.nodes[0], cluster.nodes[1:]
    response = requests.get(f"{victim.url}/v2/{REPO}/blobs/{digest}", stream=True,
                            timeout=30)
    assert response.status_code == 200, response.text[:200]
    chunks = response.iter_content(64 * 1024)
    got = read_at_least(chunks, 1 * MiB)  # it is pulling: the others join its swarm
    with ThreadPoolExecutor(len(others)) as pool:
        pulls = [pool.submit(pull_blob_digest, n, REPO, digest) for n in others]
        got += read_at_least(chunks, len(data) // 4 - got)
        published_before_kill = digest in blob_files(victim.data_dir)
        victim.kill()  # SIGKILL, the whole process group: libtorrent's session with it
        response.close()
        results = [p.result(timeout=90) for p in pulls]
    assert not published_before_kill and got < len(data), "the kill came after the pull"
    assert results == [digest] * len(others)
    for node in others:
        assert sha256_file(published_blobs(node.data_dir, [digest])[digest]) == digest, node.host

    victim.start(60)  # same data directory, same addresses
    assert pull_blob_digest(victim, REPO, digest) == digest, victim.log()[-3000:]
    assert sha256_file(published_blobs(victim.data_dir, [digest])[digest]) == digest
    for node in cluster.nodes:  # nothing corrupt was stored anywhere
        assert assert_blob_files_intact(node.data_dir) >= 1, node.host
