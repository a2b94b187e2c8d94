"""What a registry event says (pure), and the one protocol its consumers implement.

A registry change publishes one RegistryEvent after it is committed; every consumer is an
EventSink: the notification outbox (each endpoint in `notifications.endpoints[]`) and the
event trigger of replication rules. A sink must not lose an event it accepted: it persists
it (or enqueues a durable job) before `accept` returns."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

# CNCF distribution's notification actions, plus `promote` (a release promoted to a
# channel). A tag moved to another manifest is a `push` with `tag` set.
EventAction = Literal["push", "delete", "mount", "promote"]


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    action: EventAction
    repository: str
    digest: str = ""  # the manifest (or blob, for mount) the event is about; "" if unknown
    media_type: str = ""
    size: int = 0
    tag: str = ""  # the tag pushed, moved or deleted; "" when by digest
    channel: str = ""  # for `promote`: the channel now pointing at `digest`
    actor: str = ""  # user or robot; "" for anonymous
    client: str = ""  # the request's remote address
    user_agent: str = ""
    request_id: str = ""
    id: str = field(default_factory=new_event_id)
    time: float = field(default_factory=time.time)  # seconds since the epoch, UTC


class EventSink(Protocol):
    async def accept(self, event: RegistryEvent) -> None: ...
