"""The proxied side of a namespace: pull-through from an upstream group.

By digest: served locally when present, never revalidated. By tag: revalidated with a HEAD
upstream on every pull (concurrent pulls of a tag share one), or trusted for `tag_ttl` when
a tier opts in; when every upstream fails, the local copy is served stale (stale-if-error)
and marked so. Upstream 404s are remembered for `negative_ttl`.
Blob misses go through BlobFetches: one upstream transfer per blob for all waiters.
Release channels upstream (docs/releases.md) resolve per client identity: such a tag is
revalidated on every pull with the identity we serve and never cached as one for all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from stablemirror.delta.referrer import weight_layers
from stablemirror.index.mirror_rows import MirrorState
from stablemirror.index.protocol import RegistryIndex, StoredManifest
from stablemirror.metrics import Metrics
from stablemirror.mirror.access import AccessRecorder
from stablemirror.mirror.config import NamespaceSettings
from stablemirror.mirror.delta_source import MirrorDelta
from stablemirror.mirror.delta_upstream import UpstreamReader
from stablemirror.mirror.fetch import BlobFetches, BlobUpstream, FetchFailed
from stablemirror.mirror.p2p_source import MirrorP2P
from stablemirror.mirror.replicas import ReplicaPeers
from stablemirror.mirror.source import GroupBlobSource
from stablemirror.mirror.upstream import (
    ManifestReply,
    NoUpstreamAvailable,
    Upstream,
    UpstreamAnswer,
    UpstreamFailure,
    UpstreamGroup,
)
from stablemirror.mirror.via import has_passed
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import (
    BlobUnknown,
    Denied,
    LoopDetected,
    ManifestUnknown,
    OCIError,
    Unavailable,
)
from stablemirror.oci.manifest import Manifest, parse_manifest
from stablemirror.oci.names import is_valid_tag, validate_name
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.registry.protocol import BlobSource, RequestContext
from stablemirror.releases.identity import forwarded_identity
from stablemirror.store.protocol import BlobStore

log = logging.getLogger("stablemirror.mirror")
T = TypeVar("T")


class MirrorRegistry:
    def __init__(self, namespace: NamespaceSettings, group: UpstreamGroup,
                 hosted: HostedRegistry, index: RegistryIndex, mirror_index: MirrorState,
                 store: BlobStore, fetches: BlobFetches, access: AccessRecorder,
                 metrics: Metrics, node_id: str, delta: MirrorDelta | None = None) -> None:
        self.ns = namespace
        self.delta = delta  # weight layers by delta transfer (mirror/delta_source.py)
        self.p2p: MirrorP2P | None = None  # a node's swarm (mirror/p2p_source.py)
        self.group = group
        self.hosted = hosted  # local reads of what is cached share the hosted code paths
        self.index = index
        self.mirror_index = mirror_index
        self.store = store
        self.fetches = fetches
        self.access = access
        self.metrics = metrics
        self.node_id = node_id
        self._revalidating: set[tuple[str, str]] = set()
        # (repository, tag) -> the shared upstream request and the identity it asks for
        self._revalidations: dict[tuple[str, str],
                                  tuple[asyncio.Task[StoredManifest], str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.channel_tags = mirror_index.channel_tags  # upstream release channels
        self.peers: ReplicaPeers | None = None  # replicas sharing fetches (compose sets it)

    def upstream_repository(self, repository: str) -> str:
        if self.ns.strip_prefix and self.ns.prefix and repository.startswith(self.ns.prefix):
            return repository[len(self.ns.prefix):]
        return repository

    def upstream_reference(self, ctx: RequestContext, repository: str) -> tuple[str, str]:
        """(name, ns) to ask upstream for. A catch-all namespace keys `?ns=` requests by
        registry (routing.qualify) but cannot name it upstream by a prefix: it asks for the
        name the client asked for and passes the `ns` on, as containerd would."""
        if not self.ns.prefix and ctx.ns and repository.startswith(f"{ctx.ns}/"):
            return repository[len(ctx.ns) + 1:], ctx.ns
        return self.upstream_repository(repository), ""

    def _check_loop(self, ctx: RequestContext) -> None:
        if has_passed(ctx.via, self.node_id):
            raise LoopDetected(node=self.node_id, via=ctx.via)

    # -- manifests ------------------------------------------------------------------------------
    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        validate_name(repository)
        if ":" not in reference and not is_valid_tag(reference):
            raise ManifestUnknown(repository=repository, reference=reference)
        if ":" in reference:
            found = await self._by_digest(ctx, repository, Digest.parse(reference))
        else:
            found = await self._by_tag(ctx, repository, reference)
        await self._record_access(found)
        await self.hosted.record_pull(ctx, repository, reference, found.digest)
        return found

    async def _by_digest(self, ctx: RequestContext, repository: str, digest: Digest
                         ) -> StoredManifest:
        local = await self.index.get_manifest(repository, digest)
        if local is not None:
            self.metrics.cache("hit")
            return local  # content-addressed: never revalidated
        if await self.mirror_index.is_negative(repository, str(digest)):
            raise ManifestUnknown(repository=repository, reference=str(digest), cached=True)
        self._check_loop(ctx)
        self.metrics.cache("miss")
        manifest = await self._fetch(ctx, repository, str(digest), expect=digest)
        await self.index.put_manifest(repository, manifest, [], check_references=False)
        return StoredManifest(str(manifest.digest), manifest.media_type, manifest.raw)

    async def _by_tag(self, ctx: RequestContext, repository: str, tag: str) -> StoredManifest:
        if await self.channel_tags.is_channel(repository, tag):
            return await self._by_channel(ctx, repository, tag)
        local = await self.index.get_manifest(repository, tag)
        checked = (await self.mirror_index.tag_checked_at(repository, tag)
                   if self.ns.tag_ttl > 0 else None)
        fresh = checked is not None and time.time() - checked < self.ns.tag_ttl
        if local is not None and fresh:
            self.metrics.cache("hit")
            return local
        if local is None and await self.mirror_index.is_negative(repository, tag):
            raise ManifestUnknown(repository=repository, reference=tag, cached=True)
        if local is not None and self.ns.stale_while_revalidate:
            self.metrics.cache("stale")
            self._revalidate_later(ctx, repository, tag, local)
            return local
        try:
            found = await self._revalidate(ctx, repository, tag, local)
        except (Unavailable, LoopDetected):
            if local is not None and self.ns.stale_if_error:
                log.warning("serving stale %s:%s: no upstream answered", repository, tag)
                self.metrics.cache("stale")
                return dataclasses.replace(local, stale=True)
            raise
        self.metrics.cache("hit" if local is not None and found.digest == local.digest
                           else "miss")
        return found

    async def _revalidate(self, ctx: RequestContext, repository: str, tag: str,
                          local: StoredManifest | None) -> StoredManifest:
        """Ask upstream what `tag` is now. Concurrent pulls of one tag share one upstream
        request (one HEAD, or one GET when not cached): with the default tag_ttl of 0 every
        pull revalidates, and a burst must not become a burst upstream. The shared request
        runs as its own task, so a client going away does not cancel it for the others."""
        self._check_loop(ctx)
        key = (repository, tag)
        identity = self.client_identity(ctx)
        shared, leader = self._revalidations.get(key, (None, identity))
        if shared is None:
            shared = asyncio.get_running_loop().create_task(
                self._ask_upstream(ctx, repository, tag, local))
            self._revalidations[key] = (shared, identity)
            shared.add_done_callback(lambda t: self._revalidation_done(key, t))
        found = await asyncio.shield(shared)
        if found.channel and leader != identity:
            # the tag turned out to be a release channel: the shared answer was resolved
            # for the leader's identity, ours needs its own
            return await self._by_channel(ctx, repository, tag)
        return found

    def _revalidation_done(self, key: tuple[str, str], task: asyncio.Task[StoredManifest]
                           ) -> None:
        if self._revalidations.get(key, (None, ""))[0] is task:
            del self._revalidations[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _ask_upstream(self, ctx: RequestContext, repository: str, tag: str,
                            local: StoredManifest | None) -> StoredManifest:
        if local is not None:
            name, ns = self.upstream_reference(ctx, repository)
            head = await self._call(ctx, repository, tag,
                                    lambda u: u.manifest(name, tag, "HEAD", ctx.via, ns,
                                                         self.client_identity(ctx)))
            if head.channel:  # the tag became a release channel upstream
                return await self._channel_answer(ctx, repository, tag, head)
            if head.digest == local.digest:
                await self._mark_checked(repository, tag)
                return local
        replies: list[ManifestReply] = []
        manifest = await self._fetch(ctx, repository, tag, expect=None, replies=replies)
        if replies and replies[-1].channel:  # a release channel: never one tag for all
            await self.index.put_manifest(repository, manifest, [], check_references=False)
            await self.channel_tags.remember(repository, tag, self.client_identity(ctx),
                                             str(manifest.digest))
            return StoredManifest(str(manifest.digest), manifest.media_type, manifest.raw,
                                  channel=tag)
        await self.index.put_manifest(repository, manifest, [tag], check_references=False)
        await self._mark_checked(repository, tag)
        return StoredManifest(str(manifest.digest), manifest.media_type, manifest.raw)

    async def _mark_checked(self, repository: str, tag: str) -> None:
        if self.ns.tag_ttl > 0:  # with 0 nothing reads it: spare every pull a write
            await self.mirror_index.mark_tag_checked(repository, tag)

    def _revalidate_later(self, ctx: RequestContext, repository: str, tag: str,
                          local: StoredManifest) -> None:
        key = (repository, tag)
        if key in self._revalidating:
            return
        self._revalidating.add(key)

        async def run() -> None:
            try:
                await self._revalidate(ctx, repository, tag, local)
            except OCIError as e:
                log.info("background revalidation of %s:%s failed: %s", repository, tag, e.code)
            finally:
                self._revalidating.discard(key)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, ctx: RequestContext, repository: str, reference: str,
                     expect: Digest | None, replies: list[ManifestReply] | None = None
                     ) -> Manifest:
        name, ns = self.upstream_reference(ctx, repository)

        async def call(u: Upstream) -> Manifest:
            reply = await u.manifest(name, reference, "GET", ctx.via, ns,
                                     self.client_identity(ctx))
            if replies is not None:
                replies.append(reply)
            algorithm = expect.algorithm if expect else "sha256"
            try:
                manifest = parse_manifest(reply.body, reply.media_type, algorithm)
            except OCIError as e:
                raise UpstreamFailure(u.name, f"invalid_manifest:{e.code}") from e
            claimed = expect or (Digest.parse(reply.digest) if reply.digest and
                                 reply.digest.startswith(algorithm) else None)
            if claimed is not None and claimed != manifest.digest:
                raise UpstreamFailure(u.name, "digest_mismatch")
            return manifest

        manifest = await self._call(ctx, repository, reference, call)
        layers = weight_layers(manifest) if self.delta is not None else []
        if self.delta is not None and layers:
            # remember where its weight layers' chunk indexes hang (a later blob miss asks),
            # and keep those referrers here for the tiers below
            await self.delta.chunks.remember_layers(repository, str(manifest.digest),
                                                    manifest.media_type, layers)
            await self.delta.cache_referrers(UpstreamReader(self.group, name, ctx.via, ns),
                                             repository, str(manifest.digest))
        return manifest

    async def _call(self, ctx: RequestContext, repository: str, reference: str,
                    call: Callable[[Upstream], Awaitable[T]]) -> T:
        try:
            return await self.group.attempt(call)
        except NoUpstreamAvailable as e:
            raise Unavailable(repository=repository, group=e.group, reasons=e.reasons) from e
        except UpstreamAnswer as e:
            if e.status == 404:
                await self.mirror_index.remember_negative(repository, reference,
                                                          self.ns.negative_ttl)
                raise ManifestUnknown(repository=repository, reference=reference) from e
            if e.status == 508:
                raise LoopDetected(repository=repository, upstream=e.upstream) from e
            raise Denied(repository=repository, upstream=e.upstream, status=e.status) from e

    # -- release channels upstream (releases/): resolved per client identity ----------------
    # A channel tag is revalidated with a HEAD on every pull, carrying the identity we
    # serve, and is never coalesced or cached across identities: each client's answer is
    # its own. The per-identity record serves only when no upstream answers.
    def client_identity(self, ctx: RequestContext) -> str:
        return forwarded_identity(ctx.actor, ctx.client_id, ctx.client, self.node_id)

    async def _by_channel(self, ctx: RequestContext, repository: str, tag: str
                          ) -> StoredManifest:
        identity = self.client_identity(ctx)
        name, ns = self.upstream_reference(ctx, repository)
        try:
            self._check_loop(ctx)
            head = await self._call(ctx, repository, tag,
                                    lambda u: u.manifest(name, tag, "HEAD", ctx.via, ns,
                                                         identity))
        except (Unavailable, LoopDetected):
            cached = await self.channel_tags.lookup(repository, tag, identity)
            local = (await self.index.get_manifest(repository, Digest.parse(cached))
                     if cached is not None and self.ns.stale_if_error else None)
            if local is None:
                raise
            log.warning("serving stale channel %s:%s for %s: no upstream answered",
                        repository, tag, identity)
            self.metrics.cache("stale")
            return dataclasses.replace(local, stale=True, channel=tag)
        return await self._channel_answer(ctx, repository, tag, head)

    async def _channel_answer(self, ctx: RequestContext, repository: str, tag: str,
                              head: ManifestReply) -> StoredManifest:
        if not head.digest:
            raise Unavailable(repository=repository, reference=tag, reason="no digest")
        found = await self._by_digest(ctx, repository, Digest.parse(head.digest))
        if head.channel:
            await self.channel_tags.remember(repository, tag, self.client_identity(ctx),
                                             found.digest)
            return dataclasses.replace(found, channel=tag)
        await self.channel_tags.forget(repository, tag)  # no longer a channel upstream
        return found

    async def _record_access(self, found: StoredManifest) -> None:
        """A manifest being pulled marks its blobs in use, so eviction leaves them alone."""
        try:
            manifest = parse_manifest(found.content, found.media_type,
                                      Digest.parse(found.digest).algorithm)
        except OCIError:
            return
        await self.access.manifest_pulled([str(d.digest) for d in manifest.blobs])

    # -- blobs ----------------------------------------------------------------------
    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        validate_name(repository)
        d = Digest.parse(digest)
        self.access.touch(digest)
        size = await self.index.blob_size(repository, d)
        if size is None:
            stored = await self.store.stat(d)
            if stored is not None:  # cached for another repository: same bytes, link here
                await self.index.link_blob(repository, d, stored)
                size = stored
        if size is not None and await self.store.stat(d) is not None:
            self.metrics.cache("hit")
            return await self.hosted.open_blob(ctx, repository, digest)
        self._check_loop(ctx)
        name, ns = self.upstream_reference(ctx, repository)
        source: BlobUpstream = GroupBlobSource(self.group, name, d, ctx.via, ns)
        origin = await self.delta.chunks.layer(digest) if self.delta is not None else None
        if self.delta is not None and origin is not None and isinstance(source,
                                                                         GroupBlobSource):
            # a weight layer of a manifest we served: try to fetch only what changed
            source = self.delta.source(source, origin,
                                       self.upstream_reference(ctx, origin.repository)[0])
        if self.p2p is not None and isinstance(source, GroupBlobSource):
            source = self.p2p.source(source)  # pieces from the node's cluster (docs/p2p.md)
        if self.peers is not None:
            source = self.peers.wrap(source, repository, d, ctx.from_replica)
        try:
            total = await self.fetches.ensure(d, repository, source)
        except FetchFailed as e:
            if e.status == 404:
                raise BlobUnknown(repository=repository, digest=digest) from e
            if e.status in (401, 403):
                raise Denied(repository=repository, digest=digest, status=e.status) from e
            if e.status == 508:
                raise LoopDetected(repository=repository, digest=digest) from e
            raise Unavailable(repository=repository, digest=digest, reason=e.reason) from e
        if self.store.local_path(d) is None and await self.store.stat(d) is not None:
            # published to a remote store (S3) meanwhile: its .part is gone, serve the object
            await self.index.link_blob(repository, d, total)
            return await self.hosted.open_blob(ctx, repository, digest)
        return BlobSource(d, total, None,
                          lambda offset, length: self.fetches.stream(d, offset, length,
                                                                     repository, source),
                          source="upstream",
                          regions=lambda offset, length: self.fetches.regions(
                              d, offset, length, repository, source))
