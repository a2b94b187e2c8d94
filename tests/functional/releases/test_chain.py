"""Gray release through node -> edge -> center chains: each node keeps its cohort (podman
and skopeo pulls), whichever edge it goes through; an edge caches channel resolutions per
identity (never one for all); a rollback is seen on the very next pull through the chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from stablemirror.releases.rules import Entry, resolve
from tests.support.clients import Clients
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    MANIFEST_ACCEPT,
    group,
    layout_image,
    namespace,
    push_image,
    upstream,
    write_config,
)
from tests.support.release_support import api, ok

ServerFactory = Callable[..., LiveServer]
REPO = "models/llm"
pytestmark = pytest.mark.clients


def mirror(server_factory: ServerFactory, tmp_path: Path, name: str, upstream_url: str
           ) -> LiveServer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp_path / f"{name}.yml", {"up": group(upstream(upstream_url))},
                       [namespace(upstream_group="up")], node_id=name)
    return server_factory("--config", str(cfg))


def node_ids_on(version_digest: str, entries: list[Entry], count: int = 1) -> list[str]:
    """Node ids the center puts on `version_digest` (the cohort math is public)."""
    found = [n for i in range(200) if resolve(REPO, "stable", n := f"node-{i}", entries)
             .digest == version_digest]
    return found[:count]


def get(base: str, ref: str, identity: str | None = None) -> requests.Response:
    headers = {"Accept": MANIFEST_ACCEPT}
    if identity:
        headers["Stablemirror-Client-Id"] = identity
    return requests.get(f"{base}/v2/{REPO}/manifests/{ref}", headers=headers, timeout=30)


def test_nodes_keep_their_cohort_through_the_chain(server_factory: ServerFactory,
                                                   tmp_path: Path) -> None:
    center = server_factory()
    old, _ = layout_image(tmp_path / "l1", REPO, "1.0.0", (64 * 1024,))
    new, _ = layout_image(tmp_path / "l2", REPO, "1.1.0", (64 * 1024,))
    push_image(center.url, old)
    push_image(center.url, new)
    ok(api(center, REPO, "promote", {"version": "1.0.0", "channel": "stable"}))
    ok(api(center, REPO, "split", {"channel": "stable",
                                   "weights": {"1.0.0": 50, "1.1.0": 50}}))
    split = [Entry("1.0.0", old.digest, 50), Entry("1.1.0", new.digest, 50)]
    [new_id] = node_ids_on(new.digest, split)
    [old_id] = node_ids_on(old.digest, split)

    edge_a = mirror(server_factory, tmp_path, "edge-a", center.url)
    edge_b = mirror(server_factory, tmp_path, "edge-b", center.url)
    node_new = mirror(server_factory, tmp_path, new_id, edge_a.url)
    node_old = mirror(server_factory, tmp_path, old_id, edge_a.url)
    podman = Clients(tmp_path / "podman", node_new)
    skopeo = Clients(tmp_path / "skopeo", node_old)
    try:
        ref = podman.image_name(REPO, "stable")
        for _ in range(2):  # sticky over repeated pulls
            podman.podman("pull", ref)
            assert podman.podman_inspect(ref)["Digest"] == new.digest, podman.fail("podman")
            info = skopeo.skopeo_json("inspect", "--tls-verify=false",
                                      skopeo.docker_ref(REPO, "stable"))
            assert info["Digest"] == old.digest, skopeo.fail("skopeo")
        # the same node through another edge keeps its cohort
        node_new_b = mirror(server_factory, tmp_path / "b", new_id, edge_b.url)
        assert get(node_new_b.url, "stable").headers["Docker-Content-Digest"] == new.digest
        # the edge answers each identity its own version, and tells mirrors it is a channel
        r = get(edge_a.url, "stable", old_id)
        assert r.headers["Docker-Content-Digest"] == old.digest
        assert r.headers["Stablemirror-Channel"] == "stable"
        assert get(edge_a.url, "stable", new_id).headers["Docker-Content-Digest"] == new.digest
        # a mirror lists the channels it serves like tags
        listed = requests.get(f"{edge_a.url}/v2/{REPO}/tags/list", timeout=30).json()["tags"]
        assert "stable" in listed, listed
        # channels of a proxied repository are moved upstream, not on the mirror
        r = api(edge_a, REPO, "promote", {"version": "1.1.0", "channel": "stable"})
        assert r.status_code == 400 and "proxied repository" in r.text, r.text

        # center down: the edge serves each identity its last resolution, marked stale
        center.stop()
        for identity, digest in ((new_id, new.digest), (old_id, old.digest)):
            r = get(edge_a.url, "stable", identity)
            assert r.status_code == 200, r.text
            assert r.headers["Docker-Content-Digest"] == digest, identity
            assert r.headers.get("X-Stablemirror-Cache") == "stale"
        center.start()

        # rollback: the very next pull through the chain sees it
        ok(api(center, REPO, "rollback", {"channel": "stable", "reason": "regression"}))
        podman.podman("pull", ref)
        assert podman.podman_inspect(ref)["Digest"] == old.digest, podman.fail("rollback")
        assert get(node_new_b.url, "stable").headers["Docker-Content-Digest"] == old.digest
    finally:
        podman.close()
        skopeo.close()
