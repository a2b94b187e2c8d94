"""Tag freshness by default: like the CNCF distribution proxy and Harbor's proxy cache,
the mirror revalidates a tag with the upstream on every pull (a HEAD), so a moved tag is
seen at once; concurrent pulls of one tag share one HEAD. A FaultProxy in front of the
upstream counts what the mirror asks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support.clients import Clients, ReferenceRegistry
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    assert_manifest,
    get_manifest,
    group,
    logs,
    namespace,
    push_new_image,
    upstream,
    write_config,
)

ServerFactory = Callable[..., LiveServer]
CONCURRENT_PULLS = 12
HEAD_DELAY = 2.0  # the upstream's HEAD is slow, so every pull arrives while it is pending


@pytest.mark.clients
def test_a_moved_tag_is_seen_on_the_next_pull_and_concurrent_pulls_share_one_head(
        server_factory: ServerFactory, tmp_path: Path, reference: ReferenceRegistry) -> None:
    with FaultProxy(reference.host, name="upstream") as proxy:
        cfg = write_config(tmp_path / "mirror.yml", {"main": group(upstream(proxy.url))},
                           [namespace()], node_id="tags-mirror")  # default tag settings
        mirror = server_factory("--config", str(cfg))
        log = logs(mirror, reference)
        repo = f"tags/{uuid.uuid4().hex[:10]}"
        first = push_new_image(reference.url, repo, "v1", (40 * 1024,))
        clients = Clients(tmp_path / "skopeo", mirror)
        try:
            ref = clients.docker_ref(repo, "v1")
            assert clients.skopeo_json("inspect", ref)["Digest"] == first.digest

            # moved upstream: the very next pull through the mirror sees it
            moved = push_new_image(reference.url, repo, "v1", (50 * 1024,))
            assert clients.skopeo_json("inspect", ref)["Digest"] == moved.digest, (
                clients.fail("the mirror served a moved tag stale"))
            assert proxy.count("/manifests/v1", "HEAD") >= 1, proxy.summary()

            # unchanged: each pull costs a HEAD and no manifest body
            proxy.reset_counters()
            assert clients.skopeo_json("inspect", ref)["Digest"] == moved.digest
            manifest_requests = [e.method for e in proxy.requests("/manifests/")]
            assert manifest_requests and set(manifest_requests) == {"HEAD"}, proxy.summary()
        finally:
            clients.close()

        # a burst of pulls of one tag: one upstream HEAD between them
        proxy.set("delay", seconds=HEAD_DELAY, match="/manifests/v1", methods=("HEAD",))
        proxy.reset_counters()
        with ThreadPoolExecutor(CONCURRENT_PULLS) as pool:
            replies = list(pool.map(lambda _: get_manifest(mirror.url, repo, "v1"),
                                    range(CONCURRENT_PULLS)))
        proxy.pass_through()
        for r in replies:
            assert_manifest(r, moved, log)
        assert proxy.count("/manifests/v1", "HEAD") == 1, proxy.summary()
        assert proxy.count("/manifests/v1", "GET") == 0, proxy.summary()
        assert requests.get(f"{mirror.url}/v2/", timeout=5).status_code == 200
