"""A node cache on the stdlib-sqlite3 index (docs/footprint.md), as `serve --role node`
starts it: it pulls through and serves from its cache, and the index file it writes is the
SQLAlchemy backend's format, both ways. A FaultProxy in pass mode counts what the node
asks its upstream, so "served from the index" means "the upstream saw nothing"."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import Image, published_blobs, pull_image, push_new_image

FORCE_SQLALCHEMY = {"STABLEMIRROR_DATABASE__BACKEND": "sqlalchemy"}


def test_a_node_caches_on_sqlite3_and_either_backend_reads_its_index(
        hosted: LiveServer, server_factory: Callable[..., LiveServer], tmp_path: Path) -> None:
    repo = f"node-index/{uuid.uuid4().hex[:8]}"
    first = push_new_image(hosted.url, repo, "v1", layer_sizes=(300_000, 70_000))
    second = push_new_image(hosted.url, repo, "v2", layer_sizes=(90_000,))
    data = tmp_path / "node"

    def node(env: dict[str, str] | None = None) -> LiveServer:
        return server_factory("--role", "node", "--upstream", proxy.url, data_dir=data,
                              env=env)

    def served_locally(server: LiveServer, image: Image) -> None:
        proxy.reset_counters()
        pull_image(server.url, image, ref=image.digest, log=server.log)
        assert proxy.count() == 0, proxy.requests()

    with FaultProxy(hosted.host, "node->upstream") as proxy:
        lite = node()
        assert "role node, index on sqlite3" in lite.log(), lite.log()[-2000:]
        pull_image(lite.url, first, log=lite.log)  # by tag: through the upstream
        assert proxy.count("/blobs/") == len(first.blobs)
        published_blobs(data, first.blobs)
        served_locally(lite, first)
        assert requests.get(f"{lite.url}/readyz", timeout=10).status_code == 200
        lite.stop()

        # The same data dir on SQLAlchemy: what sqlite3 wrote is there; it caches more.
        full = node(FORCE_SQLALCHEMY)
        assert "role node, index on sqlalchemy" in full.log(), full.log()[-2000:]
        served_locally(full, first)
        pull_image(full.url, second, log=full.log)
        published_blobs(data, second.blobs)
        full.stop()

        # And back: sqlite3 reads what SQLAlchemy wrote.
        again = node()
        served_locally(again, second)
        served_locally(again, first)
        status = requests.get(f"{again.url}/status", timeout=10)
        assert status.status_code == 200, status.text
        assert "Traceback" not in again.log(), again.log()[-4000:]
