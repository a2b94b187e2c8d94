"""Cache bounds of the mirror: LRU size limit, inactivity, pinned repositories, hosted safety."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.live import LiveServer


def push_image(base: str, repo: str, size: int, tag: str = "v1") -> str:
    """Push a one-layer image; return the layer digest."""
    def blob(data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{base}/v2/{repo}/blobs/uploads/?digest={d}", data=data, timeout=30)
        assert r.status_code == 201, r.text
        return d

    layer, config = os.urandom(size), b'{"architecture":"amd64","os":"linux"}'
    ld, cd = blob(layer), blob(config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cd, "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": ld, "size": size}]}
    r = requests.put(f"{base}/v2/{repo}/manifests/{tag}", data=json.dumps(manifest),
                     headers={"Content-Type": manifest["mediaType"]}, timeout=30)
    assert r.status_code == 201, r.text
    return ld


def pull(server: LiveServer, repo: str, digest: str) -> bytes:
    """Pull manifest and blob; return once the mirror has published the blob (the response
    ends as soon as the digest matched; fsync and publish follow it)."""
    r = requests.get(f"{server.url}/v2/{repo}/manifests/v1", timeout=30)
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", timeout=60)
    assert r.status_code == 200, r.text
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest
    assert wait_for(lambda: stored(server.data_dir, digest), 30), "never published"
    return r.content


def stored(data_dir: Path, digest: str) -> bool:
    hexd = digest.split(":", 1)[1]
    return (data_dir / "blobs" / "sha256" / hexd[:2] / hexd).exists()


def write_config(path: Path, upstream: str, **cache: object) -> Path:
    config = {"mirror": {
        "upstream_groups": {"center": {"upstreams": [{"url": upstream}],
                                       "health_check_interval": 0}},
        "namespaces": [{"prefix": "cache/", "mode": "proxy", "upstream_group": "center",
                        "strip_prefix": False},
                       {"prefix": "local/", "mode": "hosted"}],
        "cache": {"evict_interval_seconds": 0.5, "in_use_seconds": 0, **cache},
    }}
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_lru_size_limit_evicts_oldest_mirrored_blobs_only(
        server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    center = server_factory()
    mib = 1 << 20
    digests = [push_image(center.url, f"cache/m{i}", 3 * mib) for i in range(3)]
    config = write_config(tmp_path / "edge.yaml", center.url, max_bytes=7 * mib)
    edge = server_factory("--config", str(config), workers=2)
    hosted = push_image(edge.url, "local/own", 4 * mib)
    for i, d in enumerate(digests):
        pull(edge, f"cache/m{i}", d)
        time.sleep(1.1)  # distinct access times, flushed before each eviction round
    # 9 MiB of mirrored blobs against a 7 MiB limit: the least recently used one goes.
    assert wait_for(lambda: not stored(edge.data_dir, digests[0])), edge.log()[-3000:]
    assert stored(edge.data_dir, digests[1]) and stored(edge.data_dir, digests[2])
    assert stored(edge.data_dir, hosted), "hosted content must never be evicted"
    # An evicted blob is fetched again on the next pull, byte for byte.
    pull(edge, "cache/m0", digests[0])
    assert stored(edge.data_dir, digests[0])


def test_inactive_limit_and_pinned_repositories(
        server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    center = server_factory()
    kept = push_image(center.url, "cache/pinned/model", 1 << 20)
    dropped = push_image(center.url, "cache/other", 1 << 20)
    config = write_config(tmp_path / "edge.yaml", center.url, inactive_seconds=1,
                          pinned=["cache/pinned/*"])
    edge = server_factory("--config", str(config))
    pull(edge, "cache/pinned/model", kept)
    pull(edge, "cache/other", dropped)
    assert wait_for(lambda: not stored(edge.data_dir, dropped)), edge.log()[-3000:]
    assert stored(edge.data_dir, kept), "a pinned repository is never evicted"


def test_blobs_of_a_manifest_being_pulled_are_not_evicted(
        server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    center = server_factory()
    digest = push_image(center.url, "cache/busy", 1 << 20)
    config = write_config(tmp_path / "edge.yaml", center.url, max_bytes=0,
                          in_use_seconds=30)
    edge = server_factory("--config", str(config))
    pull(edge, "cache/busy", digest)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # several eviction rounds under full pressure
        assert stored(edge.data_dir, digest)
        requests.get(f"{edge.url}/v2/cache/busy/manifests/v1", timeout=10)
        time.sleep(0.3)
