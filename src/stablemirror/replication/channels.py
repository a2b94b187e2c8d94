"""Release channels over stablemirror's release API (docs/releases.md): read a source
repository's channels, move a destination's to the same versions (promote, or split for a
weighted channel). Another registry has no such API: its answer (a 404 without an OCI
error body) says so, and channels then travel as the ordinary tags a client sees."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from stablemirror.client.registry import RegistryClient

Channels = dict[str, list[dict[str, Any]]]  # channel -> [{version, digest, weight}]


def _auth(credentials: tuple[str, str] | None) -> aiohttp.BasicAuth | None:
    return aiohttp.BasicAuth(*credentials) if credentials else None


async def release_channels(client: RegistryClient, repository: str,
                           credentials: tuple[str, str] | None) -> Channels | None:
    """The repository's channels; {} for a stablemirror repository without any (or not
    there yet); None when the registry has no release API."""
    url = f"{client.base}/api/v1/releases/{repository}/versions"
    async with client.session.get(url, auth=_auth(credentials)) as resp:
        body = await resp.read()
        status = resp.status
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if status == 200 and isinstance(doc, dict):
        return {str(k): list(v) for k, v in (doc.get("channels") or {}).items()}
    if status == 400 and isinstance(doc, dict) and "errors" in doc:
        return {}  # stablemirror: a repository it does not hold yet
    return None


async def move_channel(client: RegistryClient, repository: str, channel: str,
                       entries: list[dict[str, Any]], credentials: tuple[str, str] | None,
                       reason: str) -> None:
    base = f"{client.base}/api/v1/releases/{repository}"
    if len(entries) == 1:
        url, body = f"{base}/promote", {"version": entries[0]["version"], "channel": channel,
                                       "force": True, "reason": reason}
    else:
        url, body = f"{base}/split", {"channel": channel, "force": True, "reason": reason,
                                     "weights": {e["version"]: e["weight"] for e in entries}}
    async with client.session.post(url, json=body, auth=_auth(credentials)) as resp:
        if resp.status != 200:
            text = (await resp.text())[:300]
            raise RuntimeError(f"channel {channel} of {repository}: {resp.status} {text}")


def same_channel(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
        return sorted((str(e.get("digest")), int(e.get("weight", 100))) for e in entries)
    return key(a) == key(b)
