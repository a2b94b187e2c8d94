"""One EventSink that hands each event to every sink in a list (compose assembles it)."""

from __future__ import annotations

import logging

from stablemirror.events.model import EventSink, RegistryEvent

log = logging.getLogger("stablemirror.events")


class FanOut:
    def __init__(self, sinks: list[EventSink]) -> None:
        self.sinks = sinks

    async def accept(self, event: RegistryEvent) -> None:
        """Every sink gets the event, even after one failed; then the first failure is
        raised, so the request that made the change fails and its client retries it (a
        retried push publishes again: sinks see it at least once)."""
        failure: Exception | None = None
        for sink in self.sinks:
            try:
                await sink.accept(event)
            except Exception as exc:
                log.error("event %s (%s %s) not accepted by %s: %s", event.id, event.action,
                          event.repository, type(sink).__name__, exc)
                failure = failure or exc
        if failure is not None:
            raise failure
