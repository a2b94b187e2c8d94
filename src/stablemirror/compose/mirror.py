"""Composition of the mirror side (called from app.py, the composition root)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web

from stablemirror.compose.background import Background
from stablemirror.compose.index import IndexParts, require_sqlalchemy
from stablemirror.compose.layout import DataDir
from stablemirror.config import Settings
from stablemirror.files.create_once import create_once
from stablemirror.jobs.runner import JobContext
from stablemirror.metrics import Metrics
from stablemirror.mirror.access import AccessRecorder
from stablemirror.mirror.delta_source import MirrorDelta
from stablemirror.mirror.events import (
    BlobMissed,
    FailedOver,
    MirrorEvent,
    MirrorListener,
    UpstreamHealthChanged,
    UpstreamRequested,
)
from stablemirror.mirror.evict import CacheEvictor
from stablemirror.mirror.fetch import BlobFetches
from stablemirror.mirror.p2p_source import MirrorP2P
from stablemirror.mirror.proxied import MirrorRegistry
from stablemirror.mirror.replicas import ReplicaPeers
from stablemirror.mirror.routing import Mode, RoutingRegistry
from stablemirror.mirror.upstream import HttpClient, UpstreamGroup
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.store.protocol import BlobStore


def node_id(settings: Settings) -> str:
    """This node's name in Via headers: configured, or made once and kept in the data dir
    (workers start together: one of them makes it, all read the same, create_once.py)."""
    if settings.mirror.node_id:
        return settings.mirror.node_id
    name = create_once(DataDir(settings.data_dir).node_id,
                       lambda: f"stablemirror-{secrets.token_hex(4)}".encode(), mode=0o644)
    return name.decode().strip()


LEASE_PRUNE_SECONDS = 3600.0

@dataclass
class MirrorParts:
    registry: RoutingRegistry
    client: HttpClient
    groups: dict[str, UpstreamGroup]
    access: AccessRecorder
    fetches: BlobFetches
    evictor: CacheEvictor
    delta: MirrorDelta
    peers: ReplicaPeers | None = None
    p2p: MirrorP2P | None = None

    def schedule(self, background: Background) -> None:
        background.run("access times", self.access.run)
        if self.evictor.enabled:
            # Per host: the cache it bounds is this replica's own (docs/jobs.md).
            evictor = self.evictor

            async def evict(_ctx: JobContext) -> None:
                await evictor.run_exclusive()

            background.job("mirror.evict", evictor.settings.evict_interval_seconds, evict,
                           per_host=True, first_now=False)
        if self.peers is not None:
            # Lapsed fetch leases belong to nobody; dropping them keeps the table small.
            leases = self.peers.leases

            async def prune_leases(_ctx: JobContext) -> None:
                await leases.prune()

            background.job("mirror.fetch_leases.prune", LEASE_PRUNE_SECONDS, prune_leases,
                           first_now=False)
        for name, group in self.groups.items():
            if group.settings.health_check_interval > 0:
                background.run(f"health checks of {name}", group.health_loop)

    async def start(self, _app: web.Application) -> None:
        await self.client.start()
        if self.p2p is not None:
            self.p2p.start()

    async def stop(self, _app: web.Application) -> None:
        await self.fetches.aclose()
        await self.delta.aclose()
        if self.p2p is not None:
            await self.p2p.aclose()
        await self.client.close()


def metrics_of(metrics: Metrics) -> MirrorListener:
    """The mirror's events, counted."""
    def record(event: MirrorEvent) -> None:
        match event:
            case UpstreamHealthChanged(upstream, up):
                metrics.set_upstream_up(upstream, up)
            case UpstreamRequested(upstream, result, seconds):
                metrics.upstream_request(upstream, result, seconds)
            case FailedOver():
                metrics.failover()
            case BlobMissed(coalesced):
                metrics.cache("coalesced" if coalesced else "miss")
    return record


def build_mirror(settings: Settings, hosted: HostedRegistry, store: BlobStore,
                 parts: IndexParts, metrics: Metrics) -> MirrorParts | None:
    groups_cfg, namespaces = settings.mirror.effective(settings.upstream)
    if not namespaces:
        return None
    via = f"1.1 {node_id(settings)} (stablemirror)"
    record = metrics_of(metrics)
    client = HttpClient()
    groups: dict[str, UpstreamGroup] = {}
    for name, cfg in groups_cfg.items():
        group = UpstreamGroup(name, cfg, client, via)
        group.listeners.append(record)
        for u in group.upstreams:
            metrics.set_upstream_up(u.name, True)
        groups[name] = group
    index, mirror_index = parts.index, parts.mirror
    cache = settings.mirror.cache
    evicting = cache.max_bytes is not None or cache.inactive_seconds is not None
    access = AccessRecorder(mirror_index, immediate_for_manifests=evicting)
    fetches = BlobFetches(DataDir(settings.data_dir).fetch, store, index)

    fetches.listeners.append(record)
    delta = MirrorDelta(parts.chunks, store, metrics, index)
    fetches.published.append(delta.published)
    peers = None
    if settings.mirror.replicas.enabled:
        from stablemirror.index.fetch_leases import FetchLeases

        leases = FetchLeases(require_sqlalchemy(parts, "mirror.replicas"))
        peers = ReplicaPeers(settings.mirror.replicas, leases, client, metrics.replica_fetch)
    p2p = None
    if settings.p2p.enabled:  # blob misses from the cluster's swarm (docs/p2p.md)
        from stablemirror.p2p.engine import NodeEngine  # loads libtorrent: p2p nodes only

        engine = NodeEngine(settings.p2p, node_id(settings), DataDir(settings.data_dir).p2p)
        p2p = MirrorP2P(engine, store, metrics)
        fetches.published.append(p2p.published)
    routes: list[tuple[str, Mode, MirrorRegistry | None]] = []
    for ns in namespaces:
        mirror = None
        if ns.mode != "hosted":
            if ns.upstream_group not in groups:
                raise ValueError(f"namespace {ns.prefix!r}: unknown upstream group "
                                 f"{ns.upstream_group!r}")
            mirror = MirrorRegistry(ns, groups[ns.upstream_group], hosted, index,
                                    mirror_index, store, fetches, access, metrics,
                                    node_id(settings),
                                    delta if settings.mirror.delta else None)
            mirror.peers = peers
            mirror.p2p = p2p
        routes.append((ns.prefix, ns.mode, mirror))
    registry = RoutingRegistry(hosted, routes)
    evictor = CacheEvictor(cache, store, index, mirror_index, access, registry.is_proxied,
                           DataDir(settings.data_dir).evict_lock, parts.chunks)
    return MirrorParts(registry, client, groups, access, fetches, evictor, delta, peers, p2p)
