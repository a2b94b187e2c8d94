"""The proxied side (mirror/proxied.py): what it serves locally, what it names upstream, and
the loop it refuses to enter."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from stablemirror.index.mirror_sql import MirrorIndex
from stablemirror.index.protocol import RegistryIndex, StoredManifest
from stablemirror.metrics import Metrics
from stablemirror.mirror.access import AccessRecorder
from stablemirror.mirror.config import NamespaceSettings
from stablemirror.mirror.fetch import BlobFetches
from stablemirror.mirror.proxied import MirrorRegistry
from stablemirror.mirror.upstream import UpstreamGroup
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import LoopDetected
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.registry.protocol import RequestContext
from stablemirror.store.filesystem import FilesystemBlobStore

CONFIG, LAYER = Digest.of(b"config"), Digest.of(b"layer")
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
    "config": {"mediaType": CONFIG_TYPE, "digest": str(CONFIG), "size": 6},
    "layers": [{"mediaType": LAYER_TYPE, "digest": str(LAYER), "size": 5}]}).encode()
STORED = StoredManifest(str(Digest.of(MANIFEST)), mt.OCI_MANIFEST, MANIFEST)


class Local:
    """The index and the mirror index: the cached manifest, and nothing negative."""

    channel_tags = None  # the record of upstream channels: never asked in these tests

    def __init__(self, *cached: StoredManifest) -> None:
        self.cached = {m.digest: m for m in cached}

    async def get_manifest(self, _repository: str, reference: object) -> StoredManifest | None:
        return self.cached.get(str(reference))

    async def is_negative(self, _repository: str, _reference: str) -> bool:
        return False


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> None:
            self.calls.append((name, args))
        return call


class Counts:
    def __init__(self) -> None:
        self.results: list[str] = []

    def cache(self, result: str) -> None:
        self.results.append(result)


def mirror(local: Local, access: Recorded, metrics: Counts, prefix: str = "hub/"
           ) -> MirrorRegistry:
    nowhere = cast(UpstreamGroup, None)  # these reads never go upstream
    return MirrorRegistry(NamespaceSettings(prefix=prefix, upstream_group="g"), nowhere,
                          cast(HostedRegistry, Recorded()), cast(RegistryIndex, local),
                          cast(MirrorIndex, local), cast(FilesystemBlobStore, None),
                          cast(BlobFetches, None), cast(AccessRecorder, access),
                          cast(Metrics, metrics), "node-a")


async def test_a_cached_digest_is_served_locally_and_marks_its_blobs_in_use() -> None:
    access, metrics = Recorded(), Counts()
    found = await mirror(Local(STORED), access, metrics).get_manifest(
        RequestContext(), "hub/library/app", STORED.digest)
    assert found == STORED
    assert metrics.results == ["hit"]
    assert access.calls == [("manifest_pulled", ([str(CONFIG), str(LAYER)],))]


async def test_a_miss_that_already_passed_this_node_is_a_loop() -> None:
    ctx = RequestContext(via="1.1 node-a (stablemirror)")
    with pytest.raises(LoopDetected):
        await mirror(Local(), Recorded(), Counts()).get_manifest(ctx, "hub/library/app",
                                                                 STORED.digest)


def test_the_name_asked_upstream() -> None:
    prefixed = mirror(Local(), Recorded(), Counts())
    assert prefixed.upstream_reference(RequestContext(), "hub/library/app") == ("library/app",
                                                                                "")
    catch_all = mirror(Local(), Recorded(), Counts(), prefix="")
    ctx = RequestContext(ns="ghcr.io")  # containerd's ?ns=, folded into the name by routing
    assert catch_all.upstream_reference(ctx, "ghcr.io/team/app") == ("team/app", "ghcr.io")
