"""Fixtures shared by the mirror tests: one upstream registry of each kind per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clients import ReferenceRegistry
from tests.support.live import LiveServer
from tests.support.mirror_support import Registry, running_reference, running_server


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceRegistry]:
    """Debian's docker-registry as an upstream."""
    with running_reference(tmp_path_factory.mktemp("reference") / "data") as r:
        yield r


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """stablemirror as an upstream."""
    with running_server(tmp_path_factory.mktemp("hosted") / "data") as s:
        yield s


@pytest.fixture(params=["docker-registry", "stablemirror"])
def origin(request: pytest.FixtureRequest) -> Registry:
    """The upstream registry, one of each kind."""
    name = "reference" if request.param == "docker-registry" else "hosted"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
