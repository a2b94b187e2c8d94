"""containerd's `?ns=`: which names get the registry folded in (RoutingRegistry.qualify)."""

from __future__ import annotations

from typing import cast

import pytest

from stablemirror.mirror.proxied import MirrorRegistry
from stablemirror.mirror.routing import Mode, RoutingRegistry
from stablemirror.registry.hosted import HostedRegistry

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
