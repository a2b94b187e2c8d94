"""Pull-through semantics against real upstream registries on loopback.

Upstreams are Debian's docker-registry (distribution 2.8) and stablemirror itself (hosted);
a FaultProxy in pass mode sits between the mirror and the upstream and counts every request
and byte the mirror sends upstream, so "served locally" means "the upstream saw nothing".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from requests import post, put

from tests.support.clients import Clients, ReferenceRegistry
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    MiB,
    Registry,
    assert_blob,
    assert_blob_files_intact,
    assert_manifest,
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
    push_new_image,
    upstream,
    write_config,
)

ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def proxy(origin: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(origin.host, name="upstream") as p:
        yield p


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def start_mirror(server_factory: ServerFactory, tmp_path: Path, upstream_url: str,
                 namespaces: list[dict[str, object]] | None = None, **group_kw: object
                 ) -> LiveServer:
    cfg = write_config(tmp_path / f"mirror-{uuid.uuid4().hex[:6]}.yml",
                       {"main": group(upstream(upstream_url), **group_kw)},
                       namespaces or [namespace()], node_id="mirror-under-test")
    return server_factory("--config", str(cfg))


TTL = 3.0


def test_pull_through_caches_and_revalidates_tags(
        server_factory: ServerFactory, tmp_path: Path, origin: Registry,
        proxy: FaultProxy) -> None:
    repo = unique("pull")
    img = push_new_image(origin.url, repo, "v1", (512 * 1024, 2 * MiB, 3000))
    pinned = push_image(origin.url, make_image(repo, None, (700 * 1024,)))  # by digest only
    mirror = start_mirror(server_factory, tmp_path, proxy.url,
                          [namespace(tag_ttl=TTL, negative_ttl=60)])
    log = logs(mirror, origin)

    # a Range request on a cold blob is served from the one upstream fetch
    layer = pinned.layers[0]
    r = get_blob(mirror.url, repo, layer, headers={"Range": "bytes=1000-200999"})
    assert r.status_code == 206 and r.content == pinned.blobs[layer][1000:201000], (
        r.status_code, len(r.content))
    assert r.headers["Content-Range"] == f"bytes 1000-200999/{len(pinned.blobs[layer])}"

    # cold: manifest by tag, then by digest, then every blob, byte for byte
    first_pull = time.monotonic()
    pull_image(mirror.url, img, log=log)
    assert_manifest(get_manifest(mirror.url, repo, img.digest), img, log)
    pull_image(mirror.url, pinned, log=log)
    for image in (img, pinned):
        for digest, data in image.blobs.items():
            assert proxy.count(digest, "GET") == 1, proxy.summary()
            assert proxy.body_bytes(digest) == len(data), proxy.summary()
    # the tag fetch stored the manifest under its digest: no upstream request by digest
    assert proxy.count(f"/manifests/{img.digest}") == 0, proxy.summary()
    assert proxy.count(f"/manifests/{pinned.digest}", "GET") == 1, proxy.summary()

    # warm: by digest is served locally, and so is the tag within its ttl
    proxy.reset_counters()
    pull_image(mirror.url, pinned, log=log)
    pull_image(mirror.url, img, ref=img.digest, log=log)
    pull_image(mirror.url, img, log=log)
    assert time.monotonic() - first_pull < TTL, "too slow to check tag_ttl; raise TTL"
    assert proxy.count() == 0, proxy.summary()

    # the tag moves upstream: still the old one inside the ttl, the new one after it
    moved = push_new_image(origin.url, repo, "v1", (256 * 1024,))
    r = get_manifest(mirror.url, repo, "v1")
    assert time.monotonic() - first_pull < TTL, "too slow to check tag_ttl; raise TTL"
    assert_manifest(r, img, log)
    assert proxy.count() == 0, proxy.summary()
    time.sleep(max(0.0, first_pull + TTL + 0.3 - time.monotonic()))
    pull_image(mirror.url, moved, log=log)
    heads = proxy.requests("/manifests/v1", "HEAD")
    gets = proxy.requests("/manifests/v1", "GET")
    assert len(heads) == 1 and len(gets) == 1, proxy.summary()
    assert heads[0].started < gets[0].started, "revalidation starts with a HEAD"
    # freshly revalidated: trusted again without asking
    proxy.reset_counters()
    assert_manifest(get_manifest(mirror.url, repo, "v1"), moved, log)
    assert_manifest(get_manifest(mirror.url, repo, img.digest), img, log)  # old one kept
    assert proxy.count() == 0, proxy.summary()

    # an unchanged tag past its ttl costs one HEAD and no body
    time.sleep(TTL + 0.3)
    proxy.reset_counters()
    assert_manifest(get_manifest(mirror.url, repo, "v1"), moved, log)
    assert [e.method for e in proxy.requests()] == ["HEAD"], proxy.summary()

    # negative cache: a missing tag asked twice reaches upstream once
    proxy.reset_counters()
    for _ in range(2):
        r = get_manifest(mirror.url, repo, "no-such-tag")
        assert r.status_code == 404 and "MANIFEST_UNKNOWN" in error_codes(r), r.text
    assert proxy.count("/manifests/no-such-tag") == 1, proxy.summary()
    missing = "sha256:" + "0" * 64
    r = get_blob(mirror.url, repo, missing)
    assert r.status_code == 404 and "BLOB_UNKNOWN" in error_codes(r), r.text

    # pushes to a proxied namespace are refused, and nothing is sent upstream
    proxy.reset_counters()
    r = get_manifest(mirror.url, repo, "v1", method="HEAD")
    assert r.status_code == 200
    r = post(f"{mirror.url}/v2/{repo}/blobs/uploads/", timeout=30)
    assert r.status_code == 405 and "UNSUPPORTED" in error_codes(r), r.text
    r = put(f"{mirror.url}/v2/{repo}/manifests/v2", data=img.manifest, timeout=30,
            headers={"Content-Type": img.media_type})
    assert r.status_code == 405 and "UNSUPPORTED" in error_codes(r), r.text
    assert proxy.count() == 0, proxy.summary()
    r = get_manifest(mirror.url, repo, "v2")
    assert r.status_code == 404, "the refused push must not have created a tag"

    # what was cached is exactly what upstream has
    stored = published_blobs(mirror.data_dir, [*img.blobs, *pinned.blobs, *moved.blobs])
    for image in (img, pinned, moved):
        assert set(image.blobs) <= set(stored), "blob not cached in the mirror's data dir"
    assert assert_blob_files_intact(mirror.data_dir) >= 7


def test_both_mode_local_content_wins(server_factory: ServerFactory, tmp_path: Path,
                                      reference: ReferenceRegistry) -> None:
    with FaultProxy(reference.host) as proxy:
        shared, remote = unique("both-shared"), unique("both-remote")
        upstream_shared = push_new_image(reference.url, shared, "v1")
        upstream_remote = push_new_image(reference.url, remote, "v1", (300 * 1024,))
        mirror = start_mirror(server_factory, tmp_path, proxy.url,
                              [namespace("", mode="both")])
        log = logs(mirror, reference)
        # pushes are accepted here: the same name and tag as upstream, other content
        local = push_new_image(mirror.url, shared, "v1", (100 * 1024,))
        assert local.digest != upstream_shared.digest
        only_local = push_new_image(mirror.url, unique("both-local"), "v1")

        pull_image(mirror.url, local, log=log)
        pull_image(mirror.url, only_local, log=log)
        assert proxy.count(shared) == 0, proxy.summary()
        assert proxy.count(only_local.repo) == 0, proxy.summary()
        # not here: proxied
        pull_image(mirror.url, upstream_remote, log=log)
        assert proxy.count(f"{remote}/manifests/v1", "GET") == 1, proxy.summary()
        for digest, data in upstream_remote.blobs.items():
            assert proxy.body_bytes(digest) == len(data), proxy.summary()
        # a digest only upstream has, in the locally pushed repository: proxied too
        r = get_manifest(mirror.url, shared, upstream_shared.digest)
        assert_manifest(r, upstream_shared, log)
        assert get_manifest(mirror.url, shared, "v1").content == local.manifest


def test_containerd_ns_and_podman_registries_conf_mirror(
        server_factory: ServerFactory, tmp_path: Path, reference: ReferenceRegistry) -> None:
    """`?ns=docker.io` and a registries.conf mirror of docker.io, served by a local
    registry standing in for docker.io (no traffic leaves loopback)."""
    with FaultProxy(reference.host, name="docker.io") as hub:
        cfg = write_config(tmp_path / "ns.yml", {"hub": group(upstream(hub.url))},
                           [namespace("docker.io/", upstream_group="hub")], node_id="ns-mirror")
        mirror = server_factory("--config", str(cfg))
        log = logs(mirror, reference)
        ctrd, _ = layout_image(tmp_path / "layout1", "library/alpine", "3.19")
        pod, built = layout_image(tmp_path / "layout2", "library/alpine", "3.20",
                                  (64 * 1024, 32 * 1024))
        push_image(reference.url, ctrd)
        push_image(reference.url, pod)

        # containerd (hosts.toml mirror): the registry comes as ?ns=
        ns = {"ns": "docker.io"}
        pull_image(mirror.url, ctrd, params=ns, log=log)
        assert hub.count("/v2/library/alpine/manifests/3.19", "GET") == 1, hub.summary()
        assert hub.count("docker.io") == 0, "prefix must be stripped upstream"
        # without ns (or with a registry nobody mirrors) the name is a hosted one
        before = hub.count()
        assert get_manifest(mirror.url, "library/alpine", "3.19").status_code == 404
        r = get_manifest(mirror.url, "library/alpine", "3.19", params={"ns": "quay.io"})
        assert r.status_code == 404
        assert hub.count() == before, hub.summary()
        # the path form proxies the same content, now cached: the tag is revalidated
        # (a HEAD), nothing is fetched again
        pull_image(mirror.url, ctrd, repo="docker.io/library/alpine", log=log)
        assert [(e.method, e.path) for e in hub.requests()[before:]] == [
            ("HEAD", "/v2/library/alpine/manifests/3.19")], hub.summary()

        # podman with a registries.conf mirror for docker.io
        clients = Clients(tmp_path / "podman", mirror)
        try:
            with clients.registries_conf.open("a") as f:
                # `prefix` docker.io with a dead loopback location: if the mirror failed,
                # podman's fallback would hit 127.0.0.1:1, never the internet.
                f.write('\n[[registry]]\nprefix = "docker.io"\n'
                        'location = "127.0.0.1:1/unreachable"\ninsecure = true\n\n'
                        f'[[registry.mirror]]\nlocation = "{mirror.host}/docker.io"\n'
                        'insecure = true\n')
            clients.podman("pull", "docker.io/library/alpine:3.20")
            info = clients.podman_inspect("docker.io/library/alpine:3.20")
            assert info["Digest"] == pod.digest, clients.fail(f"podman pulled {info['Digest']}")
            assert info["RootFS"]["Layers"] == built.diff_ids, clients.fail("layer diff_ids")
            assert hub.count("/v2/library/alpine/manifests/3.20", "GET") == 1, hub.summary()
            for digest, data in pod.blobs.items():
                assert hub.body_bytes(digest) == len(data), hub.summary()
            assert set(pod.blobs) <= set(published_blobs(mirror.data_dir, pod.blobs))
        finally:
            clients.close()
        assert_blob_files_intact(mirror.data_dir)


def test_restart_keeps_tag_freshness_and_stale_if_error(
        server_factory: ServerFactory, tmp_path: Path, hosted: LiveServer) -> None:
    with FaultProxy(hosted.host) as proxy:
        fresh = push_new_image(hosted.url, unique("fresh"), "v1", (200 * 1024,))
        stale = push_new_image(hosted.url, unique("stale"), "v1", (200 * 1024,))
        never = push_new_image(hosted.url, unique("never"), "v1")
        mirror = start_mirror(server_factory, tmp_path, proxy.url,
                              [namespace("fresh/", tag_ttl=600, strip_prefix=False),
                               namespace("stale/", tag_ttl=0.5, strip_prefix=False),
                               namespace("never/", strip_prefix=False)])
        log = logs(mirror, hosted)
        pull_image(mirror.url, fresh, log=log)
        pulled = time.monotonic()
        pull_image(mirror.url, stale, log=log)

        # the tag's freshness survives a restart: no upstream contact inside the ttl
        mirror.restart()
        proxy.reset_counters()
        r = pull_image(mirror.url, fresh, log=log)
        assert "X-Stablemirror-Cache" not in r.headers, r.headers
        assert proxy.count() == 0, proxy.summary()

        # every upstream down, and the mirror restarted meanwhile
        proxy.set("refuse")
        mirror.restart()
        time.sleep(max(0.0, pulled + 0.6 - time.monotonic()))
        started = time.monotonic()
        r = pull_image(mirror.url, stale, log=log)
        assert r.headers.get("X-Stablemirror-Cache") == "stale", r.headers
        assert r.headers.get("Warning", "").startswith("110 "), r.headers
        r = pull_image(mirror.url, fresh, log=log)
        assert "X-Stablemirror-Cache" not in r.headers, "fresh tags are not stale"
        r = get_manifest(mirror.url, never.repo, "v1")
        assert r.status_code == 503 and "UNAVAILABLE" in error_codes(r), r.text
        assert time.monotonic() - started < 10, "answers must not wait on dead upstreams"
        assert_blob(get_blob(mirror.url, stale.repo, stale.layers[0]), stale.layers[0],
                    stale.blobs[stale.layers[0]], log)


def test_quick_form_keys_the_cache_by_containerd_ns(server_factory: ServerFactory,
                                                    tmp_path: Path) -> None:
    """`serve --upstream` proxies everything, and containerd names the registry as `?ns=`:
    the same repository name from two registries must be two cache entries, each asked
    upstream with its `ns` (the center keeps the two registries apart by prefix)."""
    cfg = write_config(tmp_path / "center.yml", {},
                       [namespace("docker.io/", mode="hosted", upstream_group=""),
                        namespace("ghcr.io/", mode="hosted", upstream_group="")],
                       node_id="center")
    center = server_factory("--config", str(cfg))
    hub = push_new_image(center.url, "docker.io/library/app", "v1", (100 * 1024,))
    ghcr = push_new_image(center.url, "ghcr.io/library/app", "v1", (120 * 1024,))
    with FaultProxy(center.host, name="center") as to_center:
        edge = server_factory("--upstream", to_center.url)
        log = logs(edge, center)
        for _round in range(2):  # cold, then from the cache
            for ns, image in (("docker.io", hub), ("ghcr.io", ghcr)):
                pull_image(edge.url, image, repo="library/app", params={"ns": ns}, log=log)
        for ns, image in (("docker.io", hub), ("ghcr.io", ghcr)):
            for digest, data in image.blobs.items():
                fetched = to_center.requests(digest, "GET")
                assert len(fetched) == 1, to_center.summary()
                assert fetched[0].path == f"/v2/library/app/blobs/{digest}?ns={ns}"
                assert to_center.body_bytes(digest) == len(data), to_center.summary()
        # the bare name is neither registry's
        r = get_manifest(edge.url, "library/app", "v1")
        assert r.status_code == 404, (r.status_code, r.text)
