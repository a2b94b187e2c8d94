"""Delta transfer through a real two-tier setup: a center registry (models are pushed there,
it indexes them in the background) and a node mirror, with a byte-counting FaultProxy
between them. The node pulls v1, then v2 of a synthetic safetensors model (ModelPack-shaped
manifest): only the changed bytes (plus the index) cross the proxy, and every pulled layer
is byte-identical. Fallbacks (no index, no Range, lying indexes) still pull correctly, and
a delta fetch cut mid-transfer resumes without starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from stablemirror.delta.chunker import index_file
from stablemirror.delta.format import HASH_LEN, ChunkIndex
from stablemirror.delta.referrer import ARTIFACT_TYPE, build_referrer
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import group, namespace, upstream, write_config
from tests.support.safetensors_models import (
    OCI_MANIFEST,
    Model,
    make_model,
    modelpack_manifest,
    push_model,
    sha256,
    with_changed,
    with_inserted,
)

ServerFactory = Callable[..., LiveServer]
MiB = 1 << 20
TENSOR = 2 * MiB
TIMEOUT = 60


@dataclass
class Tiers:
    center: LiveServer
    proxy: FaultProxy
    node: LiveServer

    def upstream_blob_bytes(self) -> int:
        return self.proxy.body_bytes("/blobs/", "GET")


@pytest.fixture
def tiers(server_factory: ServerFactory, tmp_path: Path) -> Iterator[Tiers]:
    center = server_factory()
    with FaultProxy(center.host, "node->center") as proxy:
        cfg = write_config(tmp_path / "node.yml", {"up": group(upstream(proxy.url))},
                           [namespace(upstream_group="up")], node_id="node-1")
        yield Tiers(center, proxy, server_factory("--config", str(cfg)))


def wait_for_index(base: str, repo: str, digest: str) -> list[str]:
    """The center indexes pushed models in the background: wait for the referrer."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        r = requests.get(f"{base}/v2/{repo}/referrers/{digest}",
                         params={"artifactType": ARTIFACT_TYPE}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        found = [m["digest"] for m in r.json()["manifests"]]
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no chunk index for {repo}@{digest}")


def wait_for_node_index(node: LiveServer, digests: list[str]) -> None:
    """The node indexes the weight layers it fetched, after publishing them."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{node.data_dir / 'index.db'}?mode=ro", uri=True) as db:
            done = {row[0] for row in db.execute("SELECT digest FROM delta_indexed")}
        if set(digests) <= done:
            return
        time.sleep(0.1)
    raise AssertionError(f"node did not index {digests}")


def pull(base: str, repo: str, tag: str, model: Model) -> None:
    r = requests.get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST},
                     timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    layers = json.loads(r.content)["layers"]
    assert [d["digest"] for d in layers] == [sha256(f) for f in model.files]
    for d, data in zip(layers, model.files, strict=True):
        got = requests.get(f"{base}/v2/{repo}/blobs/{d['digest']}", timeout=TIMEOUT)
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == d["digest"].split(":")[1]
        assert got.content == data


def metric(base: str, name: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=TIMEOUT).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def index_bytes(base: str, repo: str, digest: str) -> int:
    total = 0
    for ref in wait_for_index(base, repo, digest):
        m = requests.get(f"{base}/v2/{repo}/manifests/{ref}",
                         headers={"Accept": OCI_MANIFEST}, timeout=TIMEOUT).json()
        total += sum(d["size"] for d in m["layers"])
    return total


def hold_v1(t: Tiers, repo: str, v1: Model) -> None:
    digest = push_model(t.center.url, repo, "v1", v1)
    wait_for_index(t.center.url, repo, digest)
    pull(t.node.url, repo, "v1", v1)
    wait_for_node_index(t.node, [sha256(f) for f in v1.files])


def v1_model(seed: int) -> Model:
    return make_model(seed, shards=2, tensors_per_shard=8, tensor_bytes=TENSOR)  # 32 MiB


# 10%: the 1.15x of the issue, plus one chunk of slack: the test's 2 MiB tensors make the
# chunks around each changed one weigh more than on real models (bench/delta.py checks the
# bound without slack). 1% (one tensor) and one inserted tensor: the chunks around a
# changed region (and a rewritten safetensors header) cost up to three chunks.
SLACK = 3 * 512 * 1024


@pytest.mark.parametrize(("case", "bound", "slack"), [("10%", 1.15, SLACK // 3),
                                                      ("1%", 1.0, SLACK),
                                                      ("inserted", 1.0, SLACK)])
def test_node_pulls_v2_fetching_only_what_changed(tiers: Tiers, case: str, bound: float,
                                                  slack: int) -> None:
    v1 = v1_model(11)
    v2 = {"10%": lambda: with_changed(v1, 0.10, 12), "1%": lambda: with_changed(v1, 0.01, 13),
          "inserted": lambda: with_inserted(v1, 1, TENSOR, 14)}[case]()
    hold_v1(tiers, "models/llm", v1)
    digest = push_model(tiers.center.url, "models/llm", "v2", v2)
    index = index_bytes(tiers.center.url, "models/llm", digest)
    config, _ = modelpack_manifest(v2, "models/llm")
    tiers.proxy.reset_counters()

    pull(tiers.node.url, "models/llm", "v2", v2)

    fetched = tiers.upstream_blob_bytes()
    allowed = bound * (v2.changed_bytes + len(config)) + index + slack
    assert fetched <= allowed, (case, fetched, v2.changed_bytes, index,
                                tiers.proxy.summary())
    assert fetched < v2.size / 4
    new_layers = sum(len(f) for f in v2.files if f not in v1.files)  # the rest are cached
    saved = metric(tiers.node.url, "stablemirror_delta_bytes_saved_total")
    assert saved >= new_layers - fetched
    assert metric(tiers.node.url, 'stablemirror_delta_chunks_total{outcome="reused"}') > 0


def test_without_an_index_the_layer_is_fetched_whole(tiers: Tiers) -> None:
    v1 = v1_model(21)
    v2 = with_changed(v1, 0.10, 22)
    hold_v1(tiers, "models/a", v1)
    digest = push_model(tiers.center.url, "models/a", "v2", v2)
    wait_for_index(tiers.center.url, "models/a", digest)
    tiers.proxy.set("status", code=404, match="/referrers/")
    tiers.proxy.reset_counters()
    pull(tiers.node.url, "models/a", "v2", v2)
    assert tiers.upstream_blob_bytes() >= sum(len(f) for f in v2.files if f not in v1.files)
    assert metric(tiers.node.url, 'stablemirror_delta_fallbacks_total{reason="no_index"}') > 0


def test_an_upstream_without_range_support_still_pulls(tiers: Tiers) -> None:
    v1 = v1_model(31)
    v2 = with_changed(v1, 0.10, 32)
    hold_v1(tiers, "models/b", v1)
    digest = push_model(tiers.center.url, "models/b", "v2", v2)
    wait_for_index(tiers.center.url, "models/b", digest)
    tiers.proxy.set("norange")
    pull(tiers.node.url, "models/b", "v2", v2)
    assert metric(tiers.node.url, 'stablemirror_delta_fallbacks_total{reason="no_range"}') > 0


def _push_referrer(base: str, repo: str, subject: str, subject_size: int,
                   indexes: list[ChunkIndex]) -> None:
    ref = build_referrer(subject, OCI_MANIFEST, subject_size, indexes)
    for digest, content in ref.blobs:
        r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=TIMEOUT)
        loc = r.headers["Location"]
        url = loc if loc.startswith("http") else base + loc
        sep = "&" if "?" in url else "?"
        assert requests.put(f"{url}{sep}digest={digest}", data=content,
                            timeout=TIMEOUT).status_code == 201
    r = requests.put(f"{base}/v2/{repo}/manifests/{ref.digest}", data=ref.manifest,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 201, r.text


def _index_of(data: bytes, tmp_path: Path) -> ChunkIndex:
    path = tmp_path / f"layer-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return index_file(path)


@pytest.mark.parametrize("lie", ["changed_chunks_misnamed", "v1_chunks_named_v2"])
def test_a_lying_index_still_gives_a_correct_pull(tiers: Tiers, tmp_path: Path,
                                                  lie: str) -> None:
    """A referrer pushed before the manifest (so the center does not index it itself)
    whose chunks do not hash to the layer: the node detects it and fetches whole.

    A fetched chunk that does not match is caught before any of its bytes is served. An
    index that names only chunks the node has, all wrong, is caught by the layer's SHA-256
    at the end (as a corrupt blob from upstream would be): a client streaming it then sees
    its connection dropped, never a clean end with wrong bytes, and its retry gets the
    layer, fetched whole."""
    v1 = v1_model(41)
    v2 = with_changed(v1, 0.10, 42)
    hold_v1(tiers, "models/c", v1)
    _, manifest = modelpack_manifest(v2, "models/c")
    bogus = []
    for old, new in zip(v1.files, v2.files, strict=True):
        real = _index_of(new, tmp_path)
        if lie == "v1_chunks_named_v2":  # same size: every chunk is "local", all wrong
            fake = _index_of(old, tmp_path)
            bogus.append(ChunkIndex(real.layer_hex, real.size, fake.params, fake.lengths,
                                    fake.hashes))
            continue
        known = {c.hash for c in _index_of(old, tmp_path).chunks()}
        hashes = bytearray(real.hashes)
        for i in range(len(real)):
            if real.hash_at(i) not in known:
                hashes[i * HASH_LEN] ^= 0xFF
        bogus.append(ChunkIndex(real.layer_hex, real.size, real.params, real.lengths,
                                bytes(hashes)))
    _push_referrer(tiers.center.url, "models/c", sha256(manifest), len(manifest), bogus)
    push_model(tiers.center.url, "models/c", "v2", v2)
    if lie == "v1_chunks_named_v2":
        assert requests.get(f"{tiers.node.url}/v2/models/c/manifests/v2", timeout=TIMEOUT,
                            headers={"Accept": OCI_MANIFEST}).status_code == 200
        for f in v2.files:
            with contextlib.suppress(requests.exceptions.ChunkedEncodingError):
                r = requests.get(f"{tiers.node.url}/v2/models/c/blobs/{sha256(f)}",
                                 timeout=TIMEOUT)
                assert r.status_code == 200 and r.content == f
    pull(tiers.node.url, "models/c", "v2", v2)
    reason = "index_mismatch" if lie == "changed_chunks_misnamed" else "digest_mismatch"
    assert metric(tiers.node.url,
                  f'stablemirror_delta_fallbacks_total{{reason="{reason}"}}') > 0, \
        tiers.node.log()[-3000:]


def test_an_interrupted_delta_fetch_resumes(tiers: Tiers) -> None:
    v1 = v1_model(51)
    v2 = with_changed(v1, 0.10, 52)
    hold_v1(tiers, "models/d", v1)
    digest = push_model(tiers.center.url, "models/d", "v2", v2)
    index = index_bytes(tiers.center.url, "models/d", digest)
    changed_layer = next(sha256(n) for o, n in zip(v1.files, v2.files, strict=True) if o != n)
    tiers.proxy.reset_counters()
    # the first Range GET of a changed layer breaks after 100 kB
    tiers.proxy.set("cut", after=100_000, match=changed_layer, times=1)
    pull(tiers.node.url, "models/d", "v2", v2)
    cut = [e for e in tiers.proxy.requests(changed_layer, "GET") if e.fault]
    assert cut, tiers.proxy.summary()
    assert all("range" in e.headers for e in tiers.proxy.requests(changed_layer, "GET"))
    assert tiers.upstream_blob_bytes() <= 1.15 * v2.changed_bytes + index + 200_000


def test_a_delta_fetch_resumes_from_the_part_after_a_crash(tiers: Tiers) -> None:
    """The node dies mid-delta; restarted, its next leader resumes from the `.part` on
    disk, by delta, without asking for any byte before it again."""
    v1 = v1_model(71)
    v2 = with_changed(v1, 0.10, 72)
    hold_v1(tiers, "models/e", v1)
    digest = push_model(tiers.center.url, "models/e", "v2", v2)
    wait_for_index(tiers.center.url, "models/e", digest)
    layer, data = next((sha256(n), n) for o, n in zip(v1.files, v2.files, strict=True)
                       if o != n)
    requests.get(f"{tiers.node.url}/v2/models/e/manifests/v2", timeout=TIMEOUT,
                 headers={"Accept": OCI_MANIFEST}).raise_for_status()
    tiers.proxy.set("stall", after=100_000, match=layer, seconds=60)

    def stalled_pull() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{tiers.node.url}/v2/models/e/blobs/{layer}", timeout=TIMEOUT)

    puller = threading.Thread(target=stalled_pull, daemon=True)
    puller.start()
    parts = lambda: list((tiers.node.data_dir / "fetch").glob("*.part"))  # noqa: E731
    deadline = time.monotonic() + TIMEOUT
    while not (parts() and parts()[0].stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the local chunks before the stalled range land
    tiers.node.kill()
    puller.join(10)
    part = parts()[0]
    have = part.stat().st_size
    assert 0 < have < len(data)
    assert part.read_bytes() == data[:have]

    tiers.proxy.pass_through()
    tiers.proxy.reset_counters()
    tiers.node.start()
    pull(tiers.node.url, "models/e", "v2", v2)
    starts = [int(e.headers["range"].split("=")[1].split("-")[0])
              for e in tiers.proxy.requests(layer, "GET")]
    assert starts and min(starts) >= have - 512 * 1024, (have, starts)
    assert "range" in tiers.proxy.requests(layer, "GET")[0].headers
    assert tiers.upstream_blob_bytes() <= 1.15 * v2.changed_bytes + 512 * 1024
