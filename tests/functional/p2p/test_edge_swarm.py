"""The edge side of P2P with a real stablemirror server and real libtorrent sessions: the
metadata endpoint (credential required), the piece hand-out endpoint, the web seed
(`p2p.web_seed_nodes`) completing a swarm of one, the tracker introducing two peers of one
cluster so the second takes pieces from the first; and a node cache refused metadata,
which pulls by plain HTTP instead."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import libtorrent as lt
import pytest
import requests

from tests.support.authkit import auth_server, bearer, cli, h, sha
from tests.support.live import LiveServer, free_port
from tests.support.mirror_support import push_blob
from tests.support.p2p_support import (
    SECRET,
    add,
    credential_headers,
    get_torrent,
    metric_value,
    node_config,
    session,
    wait_metric,
    wait_seeding,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, bytes]]:
    root = tmp_path_factory.mktemp("edge")
    config = root / "edge.yml"
    config.write_text(json.dumps({"p2p": {"clusters": {"c1": SECRET}, "web_seed_nodes": 1,
                                          "claim_bytes": MiB, "announce_seconds": 1}}))
    server = LiveServer(root / "data", "--config", str(config), workers=2)
    server.start()
    data = os.urandom(4 * MiB + 12345)
    digest = push_blob(server.url, "lib/blob", data)
    yield server, digest, data
    server.stop()


def test_metadata_needs_a_node_credential(edge: tuple[LiveServer, str, bytes]) -> None:
    server, digest, _ = edge
    assert get_torrent(server.url, "lib/blob", digest, "n1", secret="wrong").status_code == 403
    assert get_torrent(server.url, "lib/blob", digest, "n1", cluster="c9").status_code == 403
    missing = "sha256:" + "0" * 64
    assert get_torrent(server.url, "lib/blob", missing, "n1").status_code == 404
    r = get_torrent(server.url, "lib/blob", digest, "n1")
    assert r.status_code == 200
    ti = lt.torrent_info(r.content)
    assert ti.priv() and ti.info_hashes().has_v2()
    assert [w["url"] for w in ti.web_seeds()] == [f"{server.url}/v2/lib/blob/blobs/{digest}"]
    # the web seed goes to one node at a time; the next one gets only the tracker
    other = lt.torrent_info(get_torrent(server.url, "lib/blob", digest, "n2").content)
    assert other.web_seeds() == [] and other.info_hashes() == ti.info_hashes()


def _pieces(server: LiveServer, digest: str, node: str, query: str = "",
            **kw: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/lib/blob/blobs/{digest}/pieces{query}",
                        headers=credential_headers(node, **kw), timeout=30)


def test_the_piece_hand_out_gives_each_part_once(edge: tuple[LiveServer, str, bytes]
                                                 ) -> None:
    server, _, _ = edge
    data = os.urandom(3 * MiB + 5)  # pieces of 256 KiB, parts of 1 MiB: 4 parts
    digest = push_blob(server.url, "lib/blob", data)
    assert _pieces(server, digest, "n1").status_code == 404  # no torrent made yet
    assert get_torrent(server.url, "lib/blob", digest, "n1").status_code == 200
    assert _pieces(server, digest, "n1", secret="wrong").status_code == 403
    bad = _pieces(server, digest, "n1", "?missing=9-1&stalled=1")
    assert bad.status_code == 416 and bad.json()["errors"][0]["code"] == "RANGE_INVALID"
    parts = [_pieces(server, digest, f"n{i}").json() for i in range(4)]  # both workers
    assert [(p["group"], p["offset"], p["length"]) for p in parts] == [
        (0, 0, MiB), (1, MiB, MiB), (2, 2 * MiB, MiB), (3, 3 * MiB, 5)]
    assert _pieces(server, digest, "n9").status_code == 204  # all out: ask the peers
    assert _pieces(server, digest, "n0", "?done=0").status_code == 204
    # n9 cannot get part 0 from n0 (say): it is handed it again, and only that one
    again = _pieces(server, digest, "n9", "?stalled=1&missing=0-3")
    assert again.status_code == 200 and again.json()["group"] == 0
    r = requests.get(f"{server.url}/v2/lib/blob/blobs/{digest}",
                     headers={"Range": f"bytes={MiB}-{2 * MiB - 1}"}, timeout=30)
    assert r.status_code == 206 and r.content == data[MiB:2 * MiB]


def test_web_seed_alone_completes_and_a_second_peer_shares(
        edge: tuple[LiveServer, str, bytes], tmp_path: Path) -> None:
    server, digest, data = edge
    first = session(free_port())
    second = session(free_port())
    seeded = get_torrent(server.url, "lib/blob", digest, "n1").content  # n1 holds the lease
    h1 = add(first, seeded, tmp_path / "n1", "n1")
    wait_seeding([h1], 30)
    name = digest.removeprefix("sha256:")
    assert hashlib.sha256((tmp_path / "n1" / name).read_bytes()).hexdigest() == name
    plain = get_torrent(server.url, "lib/blob", digest, "n3").content  # no web seed
    h2 = add(second, plain, tmp_path / "n3", "n3")
    h1.force_reannounce()
    wait_seeding([h2], 30)
    assert (tmp_path / "n3" / name).read_bytes() == data
    assert h2.status().total_payload_download >= len(data)  # all of it from peer n1
    assert h1.status().total_payload_upload >= len(data)


def test_a_node_refused_metadata_pulls_by_plain_http(
        edge: tuple[LiveServer, str, bytes], tmp_path: Path,
        server_factory: Callable[..., LiveServer]) -> None:
    server, digest, data = edge
    cfg = node_config(tmp_path / "n.yml", server.url, "n9", f"127.0.0.1:{free_port()}",
                      secret="not-the-cluster-secret")  # the edge answers 403
    node = server_factory("--config", str(cfg))
    r = requests.get(f"{node.url}/v2/lib/blob/blobs/{digest}", timeout=60)
    assert r.status_code == 200 and r.content == data
    assert metric_value(node.url, "stablemirror_p2p_fallbacks_total",
                        reason="no_metadata") == 1
    assert metric_value(node.url, "stablemirror_p2p_received_bytes_total",
                        origin="edge_http") == len(data)



def test_a_node_behind_an_edge_with_auth_gets_its_parts_with_its_token(
        tmp_path: Path, server_factory: Callable[..., LiveServer]) -> None:
    """The parts a node fetches from the edge go through the node's upstream client (its
    token flow), so an edge with `auth` on hands them out like any other pull."""
    center = auth_server(server_factory,
                         env={"STABLEMIRROR_P2P__CLUSTERS": json.dumps({"c1": SECRET})})
    admin = bearer(center, "admin", "admin-secret-1", "repository:private/app:push,pull")
    data = os.urandom(6 * MiB)
    r = requests.post(f"{center.url}/v2/private/app/blobs/uploads/",
                      params={"digest": sha(data)}, data=data, timeout=30,
                      headers=h(admin, **{"Content-Type": "application/octet-stream"}))
    assert r.status_code == 201, r.text
    created = cli(center, "robot", "create", "node", "--role", "reader", "--repos",
                  "private/*")
    secret = json.loads(created.stdout)["secret"]
    cfg = node_config(tmp_path / "n.yml", center.url, "n7", f"127.0.0.1:{free_port()}")
    doc = json.loads(cfg.read_text())
    del doc["upstream"]
    doc["mirror"].update({
        "upstream_groups": {"center": {"upstreams": [
            {"url": center.url, "username": "robot+node", "password": secret}]}},
        "namespaces": [{"prefix": "", "mode": "proxy", "upstream_group": "center"}]})
    cfg.write_text(json.dumps(doc))
    node = server_factory("--config", str(cfg))
    got = requests.get(f"{node.url}/v2/private/app/blobs/{sha(data)}", timeout=60)
    assert got.status_code == 200 and got.content == data
    assert wait_metric(node.url, "stablemirror_p2p_received_bytes_total", len(data),
                       origin="edge_pieces") == len(data)
    assert metric_value(node.url, "stablemirror_p2p_fallbacks_total") == 0
