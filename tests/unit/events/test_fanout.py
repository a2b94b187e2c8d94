"""FanOut: every sink gets every event, in list order, even after one failed; the failure
is raised afterwards so the change's request fails and is retried."""

from __future__ import annotations

import pytest

from stablemirror.events.fanout import FanOut
from stablemirror.events.model import RegistryEvent


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: list[str] = []

    async def accept(self, event: RegistryEvent) -> None:
        self.got.append(event.id)
        if self.fail:
            raise OSError("outbox unreachable")


async def test_every_sink_gets_the_event_and_a_failure_is_raised_after() -> None:
    first, broken, last = Recorder(), Recorder(fail=True), Recorder()
    event = RegistryEvent(action="push", repository="r")
    with pytest.raises(OSError, match="outbox unreachable"):
        await FanOut([first, broken, last]).accept(event)
    assert first.got == broken.got == last.got == [event.id]


async def test_no_sinks_is_a_no_op() -> None:
    await FanOut([]).accept(RegistryEvent(action="delete", repository="r"))
