"""A mirror's delta chunk rows follow its blobs (registry/gc.py): a weight layer the cache
evicts takes its rows along, and `stablemirror gc` forgets the rows of a blob that is no
longer stored (quarantined, removed by hand, or evicted before rows were forgotten), while
the rows of stored blobs stay and still serve the next delta pull."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from tests.functional.delta.test_delta_pull import Tiers, hold_v1, pull, v1_model, wait_for_index
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import group, namespace, upstream
from tests.support.oci_http import wait_until
from tests.support.safetensors_models import push_model, sha256, with_changed

ServerFactory = Callable[..., LiveServer]


def _node_config(path: Path, upstream_url: str, **cache: object) -> Path:
    mirror = {"upstream_groups": {"up": group(upstream(upstream_url))},
              "namespaces": [namespace(upstream_group="up")], "node_id": "node-1",
              "cache": {"evict_interval_seconds": 0.5, "in_use_seconds": 0, **cache}}
    path.write_text(json.dumps({"mirror": mirror}))  # JSON is YAML
    return path


def _rows(node: LiveServer) -> dict[str, int]:
    """digest -> chunk rows, from the node's index."""
    with sqlite3.connect(f"file:{node.data_dir / 'index.db'}?mode=ro", uri=True) as db:
        counts = dict(db.execute("SELECT digest, COUNT(*) FROM delta_chunks GROUP BY digest"))
        indexed = {r[0] for r in db.execute("SELECT digest FROM delta_indexed")}
    assert set(counts) <= indexed, (counts, indexed)
    return counts


def _blob_file(node: LiveServer, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return node.data_dir / "blobs" / "sha256" / hexd[:2] / hexd


def test_an_evicted_weight_layer_takes_its_chunk_rows_along(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    center = server_factory()
    with FaultProxy(center.host, "node->center") as proxy:
        # idle for 4 s: evicted, long after the node indexed it (well under a second)
        node = server_factory("--config", str(_node_config(tmp_path / "node.yml", proxy.url,
                                                           inactive_seconds=4)))
        v1 = v1_model(21)
        hold_v1(Tiers(center, proxy, node), "models/evicted", v1)
        layers = [sha256(f) for f in v1.files]
        assert set(layers) <= set(_rows(node)), _rows(node)
        wait_until(lambda: not any(_blob_file(node, d).exists() for d in layers), 30,
                   "the cache to evict the layers")
        wait_until(lambda: not set(layers) & set(_rows(node)), 10,
                   "the evicted layers' chunk rows to go")


def test_gc_forgets_the_rows_of_a_blob_no_longer_stored(server_factory: ServerFactory,
                                                        tmp_path: Path) -> None:
    center = server_factory()
    with FaultProxy(center.host, "node->center") as proxy:
        node = server_factory("--config", str(_node_config(tmp_path / "node.yml", proxy.url)))
        tiers = Tiers(center, proxy, node)
        v1 = v1_model(22)
        hold_v1(tiers, "models/swept", v1)
        gone, kept = (sha256(f) for f in v1.files)
        _blob_file(node, gone).unlink()  # as a quarantine or a hand leaves it
        shown = subprocess.run(
            [sys.executable, "-m", "stablemirror", "gc", "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stdout + shown.stderr
        m = re.search(r"chunk rows of blobs not stored forgotten\W+([\d,]+)", shown.stdout)
        assert m is not None and m.group(1) == "1", shown.stdout
        rows = _rows(node)
        assert gone not in rows and rows.get(kept, 0) > 0, rows
        # the rows that stayed still serve a delta pull of the next version
        v2 = with_changed(v1, 0.10, 23)
        digest = push_model(center.url, "models/swept", "v2", v2)
        wait_for_index(center.url, "models/swept", digest)
        pull(node.url, "models/swept", "v2", v2)
        text = requests.get(f"{node.url}/metrics", timeout=30).text
        reused = sum(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith('stablemirror_delta_chunks_total{outcome="reused"}'))
        assert reused > 0
