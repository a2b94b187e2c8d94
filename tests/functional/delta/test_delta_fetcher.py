"""The client side: DeltaLayerFetcher assembles v2's layers from v1's files in a local
directory (as `unpack --from OLD_DIR` will), against a real center registry, with the bytes
counted by a FaultProxy; it falls back to whole layers and resumes an interrupted fetch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stablemirror.client.registry import RegistryClient
from stablemirror.delta.fetcher import DeltaLayerFetcher
from stablemirror.oci.manifest import parse_manifest
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.safetensors_models import (
    OCI_MANIFEST,
    Model,
    make_model,
    push_model,
    with_changed,
)

from .test_delta_pull import TENSOR, wait_for_index

ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def center(server_factory: ServerFactory) -> Iterator[tuple[LiveServer, FaultProxy]]:
    server = server_factory()
    with FaultProxy(server.host, "client->center") as proxy:
        yield server, proxy


def _old_dir(tmp_path: Path, model: Model) -> Path:
    old = tmp_path / "old"
    old.mkdir()
    for i, f in enumerate(model.files):
        (old / f"model-{i:05d}.safetensors").write_bytes(f)
    return old


def _setup(center: tuple[LiveServer, FaultProxy], tmp_path: Path, repo: str
           ) -> tuple[Model, Model, str, Path]:
    server, _ = center
    v1 = make_model(61, shards=2, tensors_per_shard=8, tensor_bytes=TENSOR)
    v2 = with_changed(v1, 0.10, 62)
    push_model(server.url, repo, "v1", v1)
    digest = push_model(server.url, repo, "v2", v2)
    wait_for_index(server.url, repo, digest)
    return v1, v2, digest, _old_dir(tmp_path, v1)


async def _fetch_all(proxy: FaultProxy, repo: str, digest: str, old: Path, out: Path
                     ) -> DeltaLayerFetcher:
    out.mkdir(exist_ok=True)  # noqa: ASYNC240 - a test's own directory
    async with RegistryClient(proxy.host, insecure=True) as client:
        found = await client.find_manifest(repo, digest, OCI_MANIFEST)
        assert found is not None
        manifest = parse_manifest(found.content, found.media_type)
        fetcher = DeltaLayerFetcher(client, digest, sorted(old.iterdir()))  # noqa: ASYNC240
        for i, d in enumerate(manifest.blobs[1:]):
            await fetcher.fetch(repo, d, out / f"model-{i:05d}.safetensors")
    return fetcher


async def test_v2_from_an_old_directory_fetches_only_what_changed(
        center: tuple[LiveServer, FaultProxy], tmp_path: Path) -> None:
    _, proxy = center
    _v1, v2, digest, old = _setup(center, tmp_path, "models/f")
    proxy.reset_counters()
    fetcher = await _fetch_all(proxy, "models/f", digest, old, tmp_path / "new")
    for i, f in enumerate(v2.files):
        assert (tmp_path / "new" / f"model-{i:05d}.safetensors").read_bytes() == f
    blob_bytes = proxy.body_bytes("/blobs/", "GET")
    # unchanged shards are assembled from the old files too (all chunks local)
    # (2 MiB tensors: the chunks around each changed one weigh more than on real models,
    # where bench/delta.py checks the 1.15x of the issue without slack)
    assert blob_bytes <= 1.15 * v2.changed_bytes + 512 * 1024 + 64 * 1024, proxy.summary()
    assert fetcher.saved_bytes >= v2.size - blob_bytes - 64 * 1024
    assert fetcher.fallbacks == []


async def test_no_index_means_whole_layers(center: tuple[LiveServer, FaultProxy],
                                           tmp_path: Path) -> None:
    _, proxy = center
    _v1, v2, digest, old = _setup(center, tmp_path, "models/g")
    proxy.set("status", code=404, match="/referrers/")
    fetcher = await _fetch_all(proxy, "models/g", digest, old, tmp_path / "new")
    for i, f in enumerate(v2.files):
        assert (tmp_path / "new" / f"model-{i:05d}.safetensors").read_bytes() == f
    assert fetcher.fallbacks == ["no_index", "no_index"]


async def test_no_range_support_means_whole_layers(center: tuple[LiveServer, FaultProxy],
                                                   tmp_path: Path) -> None:
    _, proxy = center
    _v1, v2, digest, old = _setup(center, tmp_path, "models/h")
    proxy.set("norange")
    fetcher = await _fetch_all(proxy, "models/h", digest, old, tmp_path / "new")
    for i, f in enumerate(v2.files):
        assert (tmp_path / "new" / f"model-{i:05d}.safetensors").read_bytes() == f
    assert "no_range" in fetcher.fallbacks


async def test_an_interrupted_fetch_resumes_from_its_part(
        center: tuple[LiveServer, FaultProxy], tmp_path: Path) -> None:
    _, proxy = center
    _v1, v2, digest, old = _setup(center, tmp_path, "models/i")
    out = tmp_path / "new"
    out.mkdir()
    # what an interrupted run left: the first half of each layer, already written
    for i, f in enumerate(v2.files):
        (out / f"model-{i:05d}.safetensors.part").write_bytes(f[:len(f) // 2])
    proxy.reset_counters()
    started = time.monotonic()
    fetcher = await _fetch_all(proxy, "models/i", digest, old, out)
    assert time.monotonic() - started < 60
    for i, f in enumerate(v2.files):
        assert (out / f"model-{i:05d}.safetensors").read_bytes() == f
    assert not list(out.glob("*.part"))
    ranges = [e.headers.get("range", "") for e in proxy.requests("/blobs/", "GET")]
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges if r]
    half = len(v2.files[0]) // 2
    assert all(s >= half - 512 * 1024 for s in starts), ranges  # nothing before the part
    assert fetcher.fallbacks == []
