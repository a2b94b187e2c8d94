"""Upstream groups (mirror/upstream.py): failover order, health, and the events they report."""

from __future__ import annotations

from typing import Any

import pytest

from stablemirror.mirror.config import UpstreamGroupSettings, UpstreamSettings
from stablemirror.mirror.events import (
    FailedOver,
    MirrorEvent,
    UpstreamHealthChanged,
    UpstreamRequested,
)
from stablemirror.mirror.upstream import (
    HttpClient,
    NoUpstreamAvailable,
    Upstream,
    UpstreamAnswer,
    UpstreamFailure,
    UpstreamGroup,
)


def group(*upstreams: UpstreamSettings, max_attempts: int = 0
          ) -> tuple[UpstreamGroup, list[MirrorEvent]]:
    settings = UpstreamGroupSettings(upstreams=list(upstreams), health_check_interval=0,
                                     max_attempts=max_attempts)
    g = UpstreamGroup("g", settings, HttpClient(), "1.1 test (stablemirror)")
    events: list[MirrorEvent] = []
    g.listeners.append(events.append)
    return g, events


def up(host: str, **kw: Any) -> UpstreamSettings:
    return UpstreamSettings(url=f"http://{host}", **kw)


async def test_a_failing_upstream_fails_over_to_the_next() -> None:
    g, events = group(up("a"), up("b"))

    async def call(u: Upstream) -> str:
        if u.name == "a":
            raise UpstreamFailure(u.name, "ClientConnectorError")
        return u.name

    answers = {await g.attempt(call) for _ in range(2)}  # the rotation starts at a once
    assert answers == {"b"}
    assert FailedOver("g") in events
    requested = [e for e in events if isinstance(e, UpstreamRequested)]
    assert {(e.upstream, e.result) for e in requested} == {("a", "error"), ("b", "ok")}


async def test_an_upstream_that_fails_max_fails_times_goes_down_and_comes_back() -> None:
    g, events = group(up("a", max_fails=2), up("b", backup=True))

    async def broken(u: Upstream) -> str:
        raise UpstreamFailure(u.name, "TimeoutError")

    with pytest.raises(NoUpstreamAvailable):
        await g.attempt(broken)
    assert UpstreamHealthChanged("a", False) in events
    assert [u.name for u in g.candidates()] == ["b", "a"]  # the backup first, a as last try
    assert {(e.upstream, e.result) for e in events if isinstance(e, UpstreamRequested)} == {
        ("a", "timeout"), ("b", "timeout")}

    async def fine(u: Upstream) -> str:
        return u.name

    a = g.upstreams[0]
    g.succeeded(a)
    assert UpstreamHealthChanged("a", True) in events
    assert await g.attempt(fine) == "a"


async def test_an_answer_is_not_a_failure() -> None:
    """A 404 is the upstream's answer: no failover, and the upstream stays up."""
    g, events = group(up("a", max_fails=1), up("b"))

    async def missing(u: Upstream) -> str:
        raise UpstreamAnswer(u.name, 404)

    with pytest.raises(UpstreamAnswer):
        await g.attempt(missing)
    assert not any(isinstance(e, FailedOver | UpstreamHealthChanged) for e in events)
    assert [e.result for e in events if isinstance(e, UpstreamRequested)] == ["not_found"]


async def test_max_attempts_bounds_the_tries() -> None:
    g, events = group(up("a"), up("b"), max_attempts=3)

    async def broken(u: Upstream) -> str:
        raise UpstreamFailure(u.name, "ClientOSError")

    with pytest.raises(NoUpstreamAvailable):
        await g.attempt(broken)
    assert sum(isinstance(e, UpstreamRequested) for e in events) == 3
