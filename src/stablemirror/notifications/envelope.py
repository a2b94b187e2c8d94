"""CNCF distribution's notification envelope (pure): what a receiver of the registry's
webhooks reads. The shape is distribution's `notifications.Envelope` (media type v1), with
empty fields left out as distribution does (its `omitempty`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stablemirror.events.model import RegistryEvent

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# The request method a change arrived by, as the envelope's `request.method` says it.
METHODS = {"push": "PUT", "delete": "DELETE", "mount": "POST", "promote": "POST"}


@dataclass(frozen=True, slots=True)
class Source:
    """Where events come from: this registry as its clients reach it."""

    base_url: str  # e.g. http://registry.example:5000, for target.url
    host: str  # request.host: the registry's host:port
    addr: str  # source.addr: this instance's host:port
    instance_id: str  # source.instanceID: this replica


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def _url(event: RegistryEvent, base_url: str) -> str:
    if not event.digest:
        return ""
    kind = "blobs" if event.action == "mount" else "manifests"
    return f"{base_url.rstrip('/')}/v2/{event.repository}/{kind}/{event.digest}"


def _dense(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in ("", 0, None)}


def record(event: RegistryEvent, source: Source) -> dict[str, Any]:
    """One event of the envelope. A promotion names its channel as the target's tag: the
    tag a client pulls to get the promoted digest."""
    tag = event.channel if event.action == "promote" else event.tag
    return {
        "id": event.id,
        "timestamp": _timestamp(event.time),
        "action": event.action,
        "target": _dense({"mediaType": event.media_type, "digest": event.digest,
                          "size": event.size, "length": event.size,
                          "repository": event.repository, "url": _url(event, source.base_url),
                          "tag": tag}),
        "request": _dense({"id": event.request_id, "addr": event.client, "host": source.host,
                           "method": METHODS[event.action], "useragent": event.user_agent}),
        "actor": _dense({"name": event.actor}),
        "source": _dense({"addr": source.addr, "instanceID": source.instance_id}),
    }


def envelope(records: list[str]) -> bytes:
    """The request body for `records`, each the JSON text of one `record` (as stored)."""
    return ('{"events":[' + ",".join(records) + "]}").encode()


def record_json(event: RegistryEvent, source: Source) -> str:
    return json.dumps(record(event, source), separators=(",", ":"), ensure_ascii=False)
