"""One upstream transfer per blob across the replicas of a mirror.

Within one replica, worker processes already share one fetch through a lock file
(fetch.py). Replicas on different hosts share only the index, so the fetch leader of each
replica first claims the blob's lease there (index/fetch_leases.py). The replica that gets
it transfers from upstream and extends the lease while it does; every other replica's
leader streams the blob from that owner over the internal endpoint (`/_replica/v2/...`,
api/replica.py), from the owner's growing `.part`, so its clients get their first bytes
before the blob is complete. Each replica still verifies the digest itself before it
publishes or lets a client finish.

Never a failed pull because of this: an owner that cannot be reached or breaks off is
skipped and the leader goes upstream itself (a second transfer, never a stall). Requests
that come from a replica never delegate again, so two replicas cannot send each other
round in circles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp

from stablemirror.mirror import replica_auth
from stablemirror.mirror.config import ReplicaSettings
from stablemirror.mirror.fetch import BlobUpstream
from stablemirror.mirror.upstream import HttpClient, UpstreamFailure
from stablemirror.oci.digest import Digest

if TYPE_CHECKING:  # SQLAlchemy; replicas need that index backend (compose/index.py)
    from stablemirror.index.fetch_leases import FetchLeases

log = logging.getLogger("stablemirror.replicas")

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
INTERNAL_PREFIX = "/_replica"


class ReplicaPeers:
    """This replica's view of the others: the lease table and signed requests to owners."""

    def __init__(self, settings: ReplicaSettings, leases: FetchLeases, client: HttpClient,
                 on_event: Callable[[str], None] = lambda _kind: None) -> None:
        if settings.advertise_url is None or settings.secret is None:
            raise ValueError("replica peers need mirror.replicas.advertise_url and secret")
        self.me = settings.advertise_url.rstrip("/")
        self.secret = settings.secret
        self.settings = settings
        self.leases = leases
        self.client = client
        self.on_event = on_event  # "owner", "follower", "fallback": for metrics

    def wrap(self, inner: BlobUpstream, repository: str, digest: Digest,
             from_replica: bool) -> BlobUpstream:
        return ReplicaBlobSource(self, inner, repository, digest, from_replica)

    async def open_from(self, owner: str, repository: str, digest: Digest, offset: int
                        ) -> tuple[int, AsyncIterator[bytes]]:
        path = f"{INTERNAL_PREFIX}/v2/{repository}/blobs/{digest}"
        headers = {"Authorization": replica_auth.sign(self.secret, "GET", path, time.time())}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = await self.client.session.get(
                owner + path, headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=3, sock_read=30))
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise UpstreamFailure(owner, type(e).__name__) from e
        if response.status == 206:
            m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset:
                response.release()
                raise UpstreamFailure(owner, "bad_content_range")
            return int(m.group(3)), _chunks(owner, response)
        if response.status == 200 and offset == 0 and response.content_length is not None:
            return response.content_length, _chunks(owner, response)
        response.release()
        raise UpstreamFailure(owner, f"http_{response.status}")


class ReplicaBlobSource:
    """A fetch leader's source: the owner replica's stream, or upstream under the lease."""

    def __init__(self, peers: ReplicaPeers, inner: BlobUpstream, repository: str,
                 digest: Digest, from_replica: bool) -> None:
        self.peers = peers
        self.inner = inner
        self.repository = repository
        self.digest = digest
        self.from_replica = from_replica
        self._peer_failed: set[str] = set()

    @property
    def max_attempts(self) -> int:
        return self.inner.max_attempts + 1  # one more: a broken owner stream is not a try

    async def open(self, offset: int) -> tuple[int, AsyncIterator[bytes]]:
        peers, key = self.peers, str(self.digest)
        try:
            owner = await peers.leases.claim(key, peers.me, peers.settings.lease_seconds)
        except Exception:  # the index is down: the transfer matters more than the lease
            log.warning("fetch lease of %s not claimed; fetching without it", key)
            owner = peers.me
        if owner != peers.me and not self.from_replica and owner not in self._peer_failed:
            try:
                total, chunks = await peers.open_from(owner, self.repository,
                                                      self.digest, offset)
                peers.on_event("follower")
                return total, self._following(owner, chunks)
            except UpstreamFailure as e:
                log.warning("replica %s cannot stream %s (%s); going upstream",
                            owner, key, e.reason)
                self._peer_failed.add(owner)
                peers.on_event("fallback")
        total, chunks = await self.inner.open(offset)
        if owner == peers.me:
            peers.on_event("owner")
            return total, self._holding(chunks)
        return total, chunks

    async def _following(self, owner: str, chunks: AsyncIterator[bytes]
                         ) -> AsyncIterator[bytes]:
        try:
            async for data in chunks:
                yield data
        except UpstreamFailure:
            self._peer_failed.add(owner)  # the leader resumes; the next open goes upstream
            self.peers.on_event("fallback")
            raise

    async def _holding(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Stream upstream bytes while the lease is extended; then leave it as "ask me"."""
        peers, key = self.peers, str(self.digest)
        heartbeat = asyncio.get_running_loop().create_task(self._extend(key))
        try:
            async for data in chunks:
                yield data
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            with contextlib.suppress(Exception):
                if peers.settings.ask_owner_seconds > 0:
                    await peers.leases.extend(key, peers.me, peers.settings.ask_owner_seconds)
                else:
                    await peers.leases.release(key, peers.me)

    async def _extend(self, key: str) -> None:
        period = max(self.peers.settings.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(period)
            try:
                if not await self.peers.leases.extend(key, self.peers.me,
                                                      self.peers.settings.lease_seconds):
                    log.warning("fetch lease of %s was taken over", key)
                    return
            except Exception:
                log.warning("fetch lease of %s not extended", key, exc_info=True)


async def _chunks(owner: str, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for data, _end in response.content.iter_chunks():
            if data:
                yield data
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise UpstreamFailure(owner, type(e).__name__) from e
    finally:
        response.release()
