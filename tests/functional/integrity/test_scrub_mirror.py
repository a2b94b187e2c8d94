"""Self-heal: in a mirrored namespace, a quarantined blob is fetched again from upstream
and verified, by scrub at once or by the next pull."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import requests

from tests.functional.integrity.test_scrub import count, raw_get
from tests.support.live import LiveServer
from tests.support.mirror_support import published_blobs
from tests.support.trust_support import blob_path, cli, flip_byte, metric, push_image, sha256


def edge_config(path: Path, center: str, mode: str) -> Path:
    path.write_text(json.dumps({
        "mirror": {
            "upstream_groups": {"center": {"upstreams": [{"url": center}],
                                           "health_check_interval": 0}},
            "namespaces": [{"prefix": "cache/", "mode": "proxy", "upstream_group": "center",
                            "strip_prefix": False}]},
        "integrity": {"verify_on_read": mode}}))
    return path


def pull_layer(edge: LiveServer, repo: str, digest: str) -> bytes:
    r = requests.get(f"{edge.url}/v2/{repo}/manifests/v1", timeout=30)
    assert r.status_code == 200, r.text
    r = requests.get(f"{edge.url}/v2/{repo}/blobs/{digest}", timeout=60)
    assert r.status_code == 200 and sha256(r.content) == digest
    # the response ends once the digest matched; fsync and publish follow it
    assert digest in published_blobs(edge.data_dir, {digest}), "never published"
    return r.content


def test_scrub_heals_from_upstream(server_factory: Callable[..., LiveServer],
                                   tmp_path: Path) -> None:
    center = server_factory()
    image = push_image(center.url, "cache/llama", layer_size=2 * 1024 * 1024)
    config = edge_config(tmp_path / "edge.yml", center.url, "never")
    edge = server_factory("--config", str(config))
    pull_layer(edge, "cache/llama", image.layer)
    flip_byte(edge.data_dir, image.layer)
    out = cli("scrub", "--config", str(config), "--data-dir", str(edge.data_dir)).stdout
    assert f"CORRUPT {image.layer}: quarantined (healed)" in out, out
    assert count(out, "healed") == 1
    assert sha256(blob_path(edge.data_dir, image.layer).read_bytes()) == image.layer
    assert pull_layer(edge, "cache/llama", image.layer) == image.blobs[image.layer]
    assert list((edge.data_dir / "quarantine").iterdir())


def test_pull_after_quarantine_heals_from_upstream(server_factory: Callable[..., LiveServer],
                                                   tmp_path: Path) -> None:
    center = server_factory()
    image = push_image(center.url, "cache/bert", layer_size=1024 * 1024 + 3)
    edge = server_factory("--config", str(edge_config(tmp_path / "edge.yml", center.url,
                                                      "always")))
    pull_layer(edge, "cache/bert", image.layer)
    flip_byte(edge.data_dir, image.layer)
    status, _h, _b, complete = raw_get(edge, f"/v2/cache/bert/blobs/{image.layer}")
    assert status == 200 and not complete  # the corrupt copy is refused mid-stream ...
    # ... and the next pull gets verified bytes from upstream.
    assert pull_layer(edge, "cache/bert", image.layer) == image.blobs[image.layer]
    assert metric(edge.url, "stablemirror_blobs_quarantined_total", found_by="read") == 1
