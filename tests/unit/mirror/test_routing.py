"""containerd's `?ns=`: which names get the registry folded in (RoutingRegistry.qualify)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import pytest

from stablemirror.mirror.proxied import MirrorRegistry
from stablemirror.mirror.routing import Mode, ProxiedReads, RoutingRegistry
from stablemirror.oci.errors import BlobUnknown, ManifestUnknown, NameUnknown, Unsupported
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.registry.protocol import RegistryService, RequestContext

MIRROR = cast(MirrorRegistry, object())  # qualify only looks at prefixes and modes


def routing(*namespaces: tuple[str, Mode]) -> RoutingRegistry:
    return RoutingRegistry(cast(HostedRegistry, None),
                           [(prefix, mode, None if mode == "hosted" else MIRROR)
                            for prefix, mode in namespaces])


@pytest.mark.parametrize(("namespaces", "ns", "expected"), [
    # the quick form (`serve --upstream`): one catch-all, every registry its own entries
    ([("", "proxy")], "docker.io", "docker.io/library/app"),
    ([("", "proxy")], "ghcr.io", "ghcr.io/library/app"),
    ([("", "both")], "ghcr.io", "ghcr.io/library/app"),
    # a namespace per registry
    ([("docker.io/", "proxy")], "docker.io", "docker.io/library/app"),
    ([("docker.io/", "hosted")], "docker.io", "docker.io/library/app"),
    # a registry nobody mirrors: the name stays a hosted one
    ([("docker.io/", "proxy")], "quay.io", "library/app"),
    ([("", "hosted"), ("docker.io/", "proxy")], "quay.io", "library/app"),
])
def test_qualify(namespaces: list[tuple[str, Mode]], ns: str, expected: str) -> None:
    assert routing(*namespaces).qualify(ns, "library/app") == expected


class Recorder:
    """A registry side that records each call and answers from `answers` (or raises)."""

    def __init__(self, name: str, **answers: object) -> None:
        self.name = name
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, method: str) -> Callable[..., Awaitable[object]]:
        async def call(_ctx: RequestContext, *args: object) -> object:
            self.calls.append((method, str(args[0]) if args else ""))
            answer = self.answers.get(method, f"{self.name}:{method}")
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


def routed(mode: Mode, hosted: Recorder, proxied: Recorder) -> RoutingRegistry:
    return RoutingRegistry(cast(RegistryService, hosted),
                           [("mirror/", mode, cast(ProxiedReads, proxied))])


CTX = RequestContext()


async def test_writes_to_a_proxy_namespace_are_refused_before_any_side_sees_them() -> None:
    hosted, proxied = Recorder("hosted"), Recorder("proxied")
    router = routed("proxy", hosted, proxied)
    with pytest.raises(Unsupported):
        await router.put_manifest(CTX, "mirror/app", "v1", b"{}", "x", [])
    with pytest.raises(Unsupported):
        await router.start_upload(CTX, "mirror/app")
    with pytest.raises(Unsupported):
        await router.delete_blob(CTX, "mirror/app", "sha256:" + "0" * 64)
    assert hosted.calls == [] and proxied.calls == []
    assert await router.start_upload(CTX, "other/app") == "hosted:start_upload"


async def test_writes_to_a_both_namespace_go_to_the_hosted_side() -> None:
    hosted, proxied = Recorder("hosted"), Recorder("proxied")
    router = routed("both", hosted, proxied)
    assert await router.start_upload(CTX, "mirror/app") == "hosted:start_upload"
    assert proxied.calls == []


async def test_a_both_namespace_reads_local_first_then_upstream() -> None:
    hosted = Recorder("hosted", get_manifest=ManifestUnknown(), open_blob=BlobUnknown())
    proxied = Recorder("proxied")
    router = routed("both", hosted, proxied)
    assert await router.get_manifest(CTX, "mirror/app", "v1") == "proxied:get_manifest"
    assert await router.open_blob(CTX, "mirror/app", "d") == "proxied:open_blob"
    assert [c[0] for c in hosted.calls] == ["get_manifest", "open_blob"]


async def test_a_proxy_namespace_reads_upstream_and_lists_what_is_cached() -> None:
    hosted = Recorder("hosted", list_tags=NameUnknown())
    proxied = Recorder("proxied")
    router = routed("proxy", hosted, proxied)
    assert await router.get_manifest(CTX, "mirror/app", "v1") == "proxied:get_manifest"
    with pytest.raises(NameUnknown):  # nothing cached yet: the listing is the hosted index's
        await router.list_tags(CTX, "mirror/app", None, None)
    assert [c[0] for c in hosted.calls] == ["list_tags"]
