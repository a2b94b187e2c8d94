"""Cascading tiers: node -> edge -> center, three stablemirror processes, pulled with podman.

FaultProxies in pass mode sit between the tiers to see what each tier asks the next one
for, with which Via header. And loops: a mirror whose upstream is itself, two mirrors
pointing at each other: 508 LOOP_DETECTED, quickly.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.clients import Clients
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    assert_blob_files_intact,
    error_codes,
    get_blob,
    get_manifest,
    group,
    layout_image,
    logs,
    make_image,
    namespace,
    published_blobs,
    pull_image,
    push_image,
    upstream,
    write_config,
)

ServerFactory = Callable[..., LiveServer]


def tier(server_factory: ServerFactory, tmp_path: Path, name: str, upstream_url: str
         ) -> LiveServer:
    cfg = write_config(tmp_path / f"{name}.yml", {"up": group(upstream(upstream_url))},
                       [namespace(upstream_group="up")], node_id=name)
    return server_factory("--config", str(cfg))


@pytest.mark.clients
def test_node_edge_center_chain_with_podman(server_factory: ServerFactory,
                                            tmp_path: Path) -> None:
    center = server_factory()  # hosted: models are pushed here
    with FaultProxy(center.host, "edge->center") as to_center:
        edge = tier(server_factory, tmp_path, "edge-1", to_center.url)
        with FaultProxy(edge.host, "node->edge") as to_edge:
            node = tier(server_factory, tmp_path, "node-1", to_edge.url)
            img, built = layout_image(tmp_path / "layout", "models/llm", "v1",
                                      (256 * 1024, 64 * 1024))
            push_image(center.url, img)

            clients = Clients(tmp_path / "podman", node)
            try:
                ref = clients.image_name("models/llm", "v1")
                clients.podman("pull", ref)
                info = clients.podman_inspect(ref)
                assert info["Digest"] == img.digest, clients.fail(str(info["Digest"]))
                assert info["RootFS"]["Layers"] == built.diff_ids, clients.fail("diff_ids")

                # each tier asked the next one once per blob, and every tier now caches it
                for proxy in (to_edge, to_center):
                    for digest, data in img.blobs.items():
                        assert proxy.count(digest, "GET") == 1, proxy.summary()
                        assert proxy.body_bytes(digest) == len(data), proxy.summary()
                for server in (center, edge, node):
                    cached = published_blobs(server.data_dir, img.blobs)
                    assert set(img.blobs) <= set(cached), server.url
                    assert_blob_files_intact(server.data_dir)
                # Via names the tiers a request passed, in order
                vias = {e.headers.get("via") for e in to_center.requests()}
                assert vias == {"1.1 node-1 (stablemirror), 1.1 edge-1 (stablemirror)"}, vias
                assert {e.headers.get("via") for e in to_edge.requests()} == {
                    "1.1 node-1 (stablemirror)"}

                # a second pull costs each tier one HEAD of the tag (revalidated on every
                # pull by default) and nothing else: manifest and blobs are cached
                clients.podman("rmi", ref)
                to_edge.reset_counters()
                to_center.reset_counters()
                clients.podman("pull", ref)
                assert clients.podman_inspect(ref)["Digest"] == img.digest
                for proxy in (to_edge, to_center):
                    assert [(e.method, e.path) for e in proxy.requests()] == [
                        ("HEAD", "/v2/models/llm/manifests/v1")], proxy.summary()
                to_center.reset_counters()
                # the edge serves other nodes from its cache: the center is not asked again
                for digest, data in img.blobs.items():
                    r = get_blob(edge.url, "models/llm", digest)
                    assert r.status_code == 200 and r.content == data
                assert to_center.count() == 0, to_center.summary()
            finally:
                clients.close()


@pytest.fixture
def looped_pair(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer, LiveServer]]:
    """(self-loop, a, b): a mirror whose upstream is itself; a and b point at each other.
    Ports are chosen before start, so the configurations can name them."""
    servers: list[LiveServer] = []
    try:
        for name in ("self", "a", "b"):
            d = tmp_path / f"{name}-data"
            d.mkdir()
            servers.append(LiveServer(d))
        own, a, b = servers
        for server, target, name in ((own, own, "loop-self"), (a, b, "loop-a"),
                                     (b, a, "loop-b")):
            cfg = write_config(tmp_path / f"{name}.yml",
                               {"up": group(upstream(target.url), max_attempts=2)},
                               [namespace(upstream_group="up")], node_id=name)
            server.extra_args = ["--config", str(cfg)]
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(LiveServer.start, servers))
        yield own, a, b
    finally:
        for s in servers:
            s.stop()


def test_via_loops_answer_508_quickly(looped_pair: tuple[LiveServer, LiveServer, LiveServer]
                                      ) -> None:
    own, a, b = looped_pair
    digest = "sha256:" + "ab" * 32
    for server in (own, a, b):
        for what in ("manifest", "blob"):
            started = time.monotonic()
            r = (get_manifest(server.url, "loop/app", "v1", timeout=20) if what == "manifest"
                 else get_blob(server.url, "loop/app", digest, timeout=20))
            elapsed = time.monotonic() - started
            assert r.status_code == 508, (f"{server.url} {what}: {r.status_code} {r.text}\n"
                                          f"{server.log()[-3000:]}")
            assert error_codes(r) == ["LOOP_DETECTED"], r.text
            assert elapsed < 3, f"{what} loop took {elapsed:.1f}s"
    # the mirror still works for what it has: a loop is not a crash
    assert requests.get(f"{own.url}/v2/", timeout=5).status_code == 200


def via_request(url: str, path: str, via_lines: list[str]) -> int:
    """GET with one Via header line per entry of `via_lines` (requests would join them)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    try:
        conn.putrequest("GET", path)
        for line in via_lines:
            conn.putheader("Via", line)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_loop_detection_matches_whole_node_names(server_factory: ServerFactory,
                                                 tmp_path: Path) -> None:
    """edge-2 -> edge -> center: `edge` must not take `edge-2` in Via for itself."""
    center = server_factory()
    edge = tier(server_factory, tmp_path, "edge", center.url)
    edge2 = tier(server_factory, tmp_path, "edge-2", edge.url)
    img = push_image(center.url, make_image("loop/names", "v1", (64 * 1024,)))
    log = logs(edge2, edge, center)
    pull_image(edge2.url, img, log=log)
    assert set(img.blobs) <= set(published_blobs(edge.data_dir, img.blobs)), log()

    # uncached tags, so edge must decide whether to go upstream: center answers 404,
    # unless edge sees its own name anywhere in the list, on any of several Via lines
    def status(tag: str, via_lines: list[str]) -> int:
        return via_request(edge.url, f"/v2/loop/names/manifests/{tag}", via_lines)

    assert status("absent-1", ["1.1 edge-2 (stablemirror)"]) == 404
    assert status("absent-2", ["1.1 node (x, edge)", "1.1 edge-3"]) == 404
    assert status("absent-3", ["1.1 node (stablemirror)",
                               "1.0 other, 1.1 edge (stablemirror)"]) == 508
