"""Three tiers, node -> edge -> center, each hop counted by a FaultProxy: v2's changed bytes
cross each hop once, and only they (plus the index): the edge assembles v2's layers by
delta from the center, the node by delta from the edge, whose referrers API carries the
center's chunk index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import group, namespace, upstream, write_config
from tests.support.safetensors_models import modelpack_manifest, push_model, sha256, with_changed

from .test_delta_pull import (
    SLACK,
    index_bytes,
    pull,
    v1_model,
    wait_for_index,
    wait_for_node_index,
)

ServerFactory = Callable[..., LiveServer]


def _tier(server_factory: ServerFactory, tmp_path: Path, name: str, url: str) -> LiveServer:
    cfg = write_config(tmp_path / f"{name}.yml", {"up": group(upstream(url))},
                       [namespace(upstream_group="up")], node_id=name)
    return server_factory("--config", str(cfg))


def test_each_tier_fetches_only_the_changed_bytes(server_factory: ServerFactory,
                                                  tmp_path: Path) -> None:
    center = server_factory()
    with FaultProxy(center.host, "edge->center") as to_center:
        edge = _tier(server_factory, tmp_path, "edge-1", to_center.url)
        with FaultProxy(edge.host, "node->edge") as to_edge:
            node = _tier(server_factory, tmp_path, "node-1", to_edge.url)
            v1 = v1_model(81)
            v2 = with_changed(v1, 0.10, 82)
            wait_for_index(center.url, "models/t",
                           push_model(center.url, "models/t", "v1", v1))
            pull(node.url, "models/t", "v1", v1)
            for server in (edge, node):
                wait_for_node_index(server, [sha256(f) for f in v1.files])
            digest = push_model(center.url, "models/t", "v2", v2)
            index = index_bytes(center.url, "models/t", digest)
            config, _ = modelpack_manifest(v2, "models/t")
            to_center.reset_counters()
            to_edge.reset_counters()

            pull(node.url, "models/t", "v2", v2)

            allowed = 1.15 * (v2.changed_bytes + len(config)) + index + SLACK // 3
            for proxy in (to_center, to_edge):
                fetched = proxy.body_bytes("/blobs/", "GET")
                assert fetched <= allowed, (proxy.name, fetched, allowed, proxy.summary(),
                                            [line for line in node.log().splitlines()
                                             if "delta" in line or "referrer" in line])
