"""Preheat: warm node caches with an image before a rollout (`stablemirror preheat`).

Each selected node is asked for the image's manifest (a pull-through miss on the node) and
then for every blob it names, children of an index included; the node verifies and keeps
what it fetched, through its cluster's swarm when `p2p` is on (docs/p2p.md), so the nodes
warming at once share pieces instead of each taking the image from the edge. The bytes the
node sends back are hashed and dropped here, never kept.

Selection: every given node, or `percentage` of them chosen by rendezvous hashing of
(image, node): the same image always picks the same nodes, different images spread over
the cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass

from stablemirror.client.reference import ImageReference
from stablemirror.client.registry import RegistryClient
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import parse_manifest


@dataclass(frozen=True)
class Warmed:
    node: str
    manifests: int
    blobs: int
    bytes: int


class _Discard:
    def write(self, data: bytes, /) -> int:
        return len(data)


def select_nodes(nodes: list[str], image: str, percentage: float | None) -> list[str]:
    if percentage is None:
        return list(nodes)
    count = math.ceil(len(nodes) * max(0.0, min(percentage, 100.0)) / 100)
    ranked = sorted(nodes, key=lambda n: hashlib.sha256(f"{image}\n{n}".encode()).digest())
    return ranked[:count]


async def warm(node: str, image: ImageReference, insecure: bool = True) -> Warmed:
    async with RegistryClient(node, insecure=insecure, timeout=3600) as client:
        pending = [image.reference]
        seen: set[str] = set()
        manifests = blobs = size = 0
        while pending:
            ref = pending.pop()
            fetched = await client.get_manifest(image.repository, ref)
            manifests += 1
            manifest = parse_manifest(fetched.content, fetched.media_type)
            pending.extend(str(c.digest) for c in manifest.children
                           if str(c.digest) not in seen)
            seen.update(str(c.digest) for c in manifest.children)
            for blob in manifest.blobs:
                if str(blob.digest) in seen:
                    continue
                seen.add(str(blob.digest))
                size += await client.download_blob(image.repository,
                                                   Digest.parse(str(blob.digest)), _Discard())
                blobs += 1
        return Warmed(node, manifests, blobs, size)


async def preheat(nodes: list[str], image: ImageReference, insecure: bool = True
                  ) -> list[Warmed | BaseException]:
    """Warm every node at once (their swarm shares the pieces); one result per node."""
    return list(await asyncio.gather(*(warm(n, image, insecure) for n in nodes),
                                     return_exceptions=True))
