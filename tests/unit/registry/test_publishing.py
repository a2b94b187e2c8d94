"""PublishingRegistry: one event per committed change with the request's who and where;
a change that fails publishes nothing; a tag delete names the manifest it pointed at."""

from __future__ import annotations

from typing import Any

import pytest

from stablemirror.events.model import RegistryEvent
from stablemirror.index.protocol import StoredManifest
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestUnknown
from stablemirror.registry.protocol import PutManifestResult, RequestContext
from stablemirror.registry.publishing import PublishingRegistry

DIGEST = "sha256:" + "cd" * 32
CTX = RequestContext(actor="alice", client="10.1.2.3:5555", user_agent="skopeo/1.0",
                     request_id="r-1", method="PUT")
BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


class Sink:
    def __init__(self) -> None:
        self.events: list[RegistryEvent] = []

    async def accept(self, event: RegistryEvent) -> None:
        self.events.append(event)


class Inner:
    """Just the calls PublishingRegistry makes; `fail` makes every change raise."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.reads: list[RequestContext] = []

    async def put_manifest(self, *_args: Any) -> PutManifestResult:
        if self.fail:
            raise ManifestUnknown()
        return PutManifestResult(Digest.parse(DIGEST), None)

    async def delete_manifest(self, *_args: Any) -> None:
        if self.fail:
            raise ManifestUnknown()

    async def get_manifest(self, ctx: RequestContext, _repo: str, _ref: str) -> StoredManifest:
        self.reads.append(ctx)
        return StoredManifest(DIGEST, "application/vnd.oci.image.manifest.v1+json", BODY)

    async def mount_blob(self, *_args: Any) -> bool:
        return not self.fail


def published(fail: bool = False) -> tuple[PublishingRegistry, Sink, Inner]:
    sink, inner = Sink(), Inner(fail)
    return PublishingRegistry(inner, sink), sink, inner  # type: ignore[arg-type]


async def test_a_push_by_tag_with_extra_tags_is_one_event_per_tag() -> None:
    reg, sink, _ = published()
    await reg.put_manifest(CTX, "r", "v1", BODY, "application/json", ["latest"])
    assert [(e.action, e.tag) for e in sink.events] == [("push", "v1"), ("push", "latest")]
    e = sink.events[0]
    assert (e.digest, e.size, e.media_type) == (DIGEST, len(BODY),
                                                "application/vnd.oci.image.manifest.v1+json")
    assert (e.actor, e.client, e.user_agent, e.request_id) == (
        "alice", "10.1.2.3:5555", "skopeo/1.0", "r-1")
    assert sink.events[0].id != sink.events[1].id


async def test_a_push_by_digest_is_one_untagged_event() -> None:
    reg, sink, _ = published()
    await reg.put_manifest(CTX, "r", DIGEST, BODY, "application/json", [])
    assert [(e.action, e.tag, e.digest) for e in sink.events] == [("push", "", DIGEST)]


async def test_deletes_name_what_they_removed() -> None:
    reg, sink, inner = published()
    await reg.delete_manifest(CTX, "r", "old")
    await reg.delete_manifest(CTX, "r", DIGEST)
    assert [(e.action, e.tag, e.digest) for e in sink.events] == [
        ("delete", "old", DIGEST), ("delete", "", DIGEST)]
    assert [c.method for c in inner.reads] == ["HEAD"]  # the look-up is not a pull


async def test_a_mount_is_published_only_when_it_mounted() -> None:
    reg, sink, _ = published()
    assert await reg.mount_blob(CTX, "r", DIGEST, "src")
    assert [(e.action, e.digest) for e in sink.events] == [("mount", DIGEST)]
    reg, sink, _ = published(fail=True)
    assert not await reg.mount_blob(CTX, "r", DIGEST, "src")
    assert sink.events == []


async def test_a_failed_change_publishes_nothing() -> None:
    reg, sink, _ = published(fail=True)
    with pytest.raises(ManifestUnknown):
        await reg.put_manifest(CTX, "r", "v1", BODY, "application/json", [])
    with pytest.raises(ManifestUnknown):
        await reg.delete_manifest(CTX, "r", DIGEST)
    assert sink.events == []


async def test_a_tag_delete_in_a_proxied_repository_looks_nothing_up() -> None:
    sink, inner = Sink(), Inner()
    reg = PublishingRegistry(inner, sink, is_hosted=lambda _r: False)  # type: ignore[arg-type]
    await reg.delete_manifest(CTX, "r", "old")
    assert inner.reads == []  # a mirror would have asked its upstream
    assert [(e.tag, e.digest) for e in sink.events] == [("old", "")]
