"""Real containerd pulls through the mirror, configured as docs/mirror.md says: a hosts.toml
mirror host for docker.io (`ctr --hosts-dir`, which is what `config_path` gives the CRI
plugin). containerd asks `/v2/library/app/...?ns=docker.io`; the mirror's `docker.io/`
namespace proxies to a local registry standing in for docker.io (nothing leaves loopback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.clients import ReferenceRegistry
from tests.support.containerd_client import Containerd
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    assert_blob_files_intact,
    group,
    layout_image,
    namespace,
    published_blobs,
    push_image,
    upstream,
    write_config,
)

ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    daemon = Containerd()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.clients
def test_containerd_pulls_through_the_mirror(
        server_factory: ServerFactory, tmp_path: Path, reference: ReferenceRegistry,
        containerd: Containerd) -> None:
    with FaultProxy(reference.host, name="docker.io") as hub:
        cfg = write_config(tmp_path / "mirror.yml", {"hub": group(upstream(hub.url))},
                           [namespace("docker.io/", upstream_group="hub")],
                           node_id="ctrd-mirror")
        mirror = server_factory("--config", str(cfg))
        img, _built = layout_image(tmp_path / "layout", "library/ctrd-app", "v1",
                                   (64 * 1024, 48 * 1024))
        push_image(reference.url, img)
        containerd.mirror("docker.io", mirror.url, fallback="http://127.0.0.1:1")

        ref = "docker.io/library/ctrd-app:v1"
        containerd.pull(ref)
        assert containerd.image_digest(ref) == img.digest, containerd.log()

        # the mirror served it: it fetched every blob once from upstream, with its Via,
        # and cached them; containerd's ?ns= became the docker.io/ namespace
        manifest_gets = hub.requests("/v2/library/ctrd-app/manifests/v1", "GET")
        assert len(manifest_gets) == 1, hub.summary()
        assert manifest_gets[0].headers.get("via") == "1.1 ctrd-mirror (stablemirror)"
        for digest, data in img.blobs.items():
            assert hub.count(digest, "GET") == 1, hub.summary()
            assert hub.body_bytes(digest) == len(data), hub.summary()
        assert set(img.blobs) <= set(published_blobs(mirror.data_dir, img.blobs)), mirror.log()
        assert_blob_files_intact(mirror.data_dir)
        # and containerd's own requests reached the mirror, in its `?ns=` form
        access = [line for line in mirror.log().splitlines() if "stablemirror.access" in line]
        for digest in img.blobs:
            assert any(f"GET /v2/library/ctrd-app/blobs/{digest} 200" in line and
                       "repository=docker.io/library/ctrd-app" in line for line in access), (
                f"containerd's GET of {digest} not in the mirror's access log:\n"
                + "\n".join(access[-20:]))


@pytest.mark.clients
def test_containerd_pulls_one_name_from_two_registries_through_the_quick_form(
        server_factory: ServerFactory, tmp_path: Path, containerd: Containerd) -> None:
    """`serve --upstream CENTER` as the mirror of docker.io and ghcr.io: `library/app` of
    each registry is its own image, kept apart by `?ns=` (the center has both registries
    as namespaces; here hosted, as a stand-in for proxying the real ones)."""
    cfg = write_config(tmp_path / "center.yml", {},
                       [namespace("docker.io/", mode="hosted", upstream_group=""),
                        namespace("ghcr.io/", mode="hosted", upstream_group="")],
                       node_id="center")
    center = server_factory("--config", str(cfg))
    images = {}
    for registry, sizes in (("docker.io", (40 * 1024,)), ("ghcr.io", (56 * 1024, 8 * 1024))):
        img, _ = layout_image(tmp_path / f"layout-{registry}", "library/app", "v1", sizes)
        images[registry] = push_image(center.url, img, repo=f"{registry}/library/app")
    assert images["docker.io"].digest != images["ghcr.io"].digest
    edge = server_factory("--upstream", center.url)
    for registry in images:
        containerd.mirror(registry, edge.url, fallback="http://127.0.0.1:1")
    for registry, img in images.items():
        ref = f"{registry}/library/app:v1"
        containerd.pull(ref)
        assert containerd.image_digest(ref) == img.digest, f"{ref}\n{edge.log()[-3000:]}"
    cached = published_blobs(edge.data_dir, [d for i in images.values() for d in i.blobs])
    assert all(set(i.blobs) <= set(cached) for i in images.values()), edge.log()[-3000:]
