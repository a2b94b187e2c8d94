"""What the mirror reports while it works, as typed events. Upstream groups and blob
fetches each take one list of listeners of one type; the composition root turns the
events into metrics (compose/mirror.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stablemirror.metrics import UpstreamResult


@dataclass(frozen=True, slots=True)
class UpstreamHealthChanged:
    upstream: str
    up: bool


@dataclass(frozen=True, slots=True)
class UpstreamRequested:
    """One request to an upstream; `seconds` until its answer (or failure)."""

    upstream: str
    result: UpstreamResult
    seconds: float


@dataclass(frozen=True, slots=True)
class FailedOver:
    """An upstream failed mid-attempt: the group moves on to the next one."""

    group: str


@dataclass(frozen=True, slots=True)
class BlobMissed:
    """A blob not in the store: this worker leads its fetch, or joins one in flight."""

    coalesced: bool


MirrorEvent = UpstreamHealthChanged | UpstreamRequested | FailedOver | BlobMissed
MirrorListener = Callable[[MirrorEvent], None]
