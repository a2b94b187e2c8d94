"""The composition root: the one place where stores, index, services and HTTP meet."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from stablemirror import __version__
from stablemirror.api.connections import (
    CONNECTION_GUARD,
    ConnectionGuard,
    guard_middleware,
    run_guarded,
)
from stablemirror.api.errors import add_api_version, oci_errors
from stablemirror.api.keys import HEALTH, METRICS, QUALIFY_NAME, REGISTRY, SENDFILE_POOL
from stablemirror.api.ops import add_ops_routes
from stablemirror.api.p2p import EDGE_SWARMS, NODE_P2P_STATUS, add_p2p_routes
from stablemirror.api.replica import add_replica_routes
from stablemirror.api.replication import add_replication_routes
from stablemirror.api.routes import add_routes
from stablemirror.api.telemetry import add_request_id, telemetry
from stablemirror.compose.auth import build_audit, install_access
from stablemirror.compose.background import Background
from stablemirror.compose.index import build_index
from stablemirror.compose.jobs import build_runner, schedule_gc
from stablemirror.compose.layout import DataDir
from stablemirror.compose.mirror import build_mirror
from stablemirror.compose.notifications import build_notifications
from stablemirror.compose.releases import build_releases
from stablemirror.compose.replication import build_replication
from stablemirror.compose.scanning import build_scanning
from stablemirror.compose.storage import build_store, cold_of, readiness_checks
from stablemirror.compose.trust import build_trust
from stablemirror.config import Settings
from stablemirror.delta.hosted import PushIndexer
from stablemirror.events.fanout import FanOut
from stablemirror.events.model import EventSink
from stablemirror.integrity.scrub import ServiceHealer
from stablemirror.metrics import Metrics
from stablemirror.p2p.edge import IDLE_CHECK_SECONDS, EdgeSwarms
from stablemirror.registry.health import HealthService
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.registry.publishing import PublishingRegistry

__all__ = ["build_app", "run_guarded"]  # run_guarded: server/prefork.py runs the app with it

READ_BUFSIZE = 1 << 20  # larger socket reads make pushes cheaper


def build_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """`metrics`: server/prefork.py passes one in multiprocess mode; else a private one."""
    metrics = metrics or Metrics()
    store = build_store(settings, metrics)
    # The index and the stores beside it, on SQLAlchemy or, for a node, the stdlib's
    # sqlite3 (compose/index.py); `db` is SQLAlchemy's (None on sqlite3), for the parts
    # only it implements, which a node's settings do not turn on.
    parts = build_index(settings)
    index, db = parts.index, parts.db
    # telemetry first (outermost but for the connection guard, which only marks when a
    # request's headers were complete): it sees the final status and sends the body itself.
    app = web.Application(middlewares=[guard_middleware, telemetry, oci_errors],
                          handler_args={"read_bufsize": READ_BUFSIZE})
    app[CONNECTION_GUARD] = ConnectionGuard(settings.connections)
    audit = build_audit(settings, db)  # None unless auth (or audit.enabled) is on
    hosted = HostedRegistry(store, index, audit.record if audit is not None else None)
    mirror = build_mirror(settings, hosted, store, parts, metrics)
    # Pushed weight layers get chunk indexes, as referrers, in the background (delta/).
    push_indexer = PushIndexer(hosted, cold_of(store))  # local files of every blob
    routed = push_indexer.wrap(mirror.registry if mirror is not None else hosted)
    app.on_cleanup.append(push_indexer.stop)
    # Every registry change (push, tag move, delete, mount, promotion) is published, once
    # committed, to each of these sinks in order (docs/notifications.md). A new consumer of
    # registry events is one more entry in this list.
    notifications = build_notifications(settings, db, metrics)
    event_sinks: list[EventSink] = [*notifications.sinks]
    events = FanOut(event_sinks)
    hosted_here = ((lambda r: not mirror.registry.is_proxied(r)) if mirror is not None
                   else (lambda _r: True))
    routed = PublishingRegistry(routed, events, hosted_here)
    # Release channels resolve per client in hosted namespaces (compose/releases.py).
    releases = build_releases(settings, db, index, parts.mirror.channel_tags, metrics,
                              audit.record if audit is not None else None, events)
    registry = releases.wrap(routed, hosted_here)
    # Trust policies and verified reads wrap hosted and mirrored namespaces alike; with a
    # mirror, quarantined blobs heal from upstream (compose/trust.py).
    trust = build_trust(settings, registry, store, parts.trust, metrics,
                        audit=audit.record if audit is not None else None,
                        healer=ServiceHealer(registry, store) if mirror is not None else None)
    # Scanning policies decide pulls from scan results; scans read below trust (so an
    # unsigned image is still scanned) and attach their reports in the local index.
    scanning = build_scanning(settings, trust.registry, registry, hosted, store, db, metrics,
                              audit.record if audit is not None else None)
    app[REGISTRY] = scanning.registry
    app.on_startup.append(scanning.start)
    app.on_cleanup.append(scanning.stop)
    # Every worker's loops, on one lifecycle; periodic work runs as jobs of the index's
    # queue, once across replicas (docs/jobs.md).
    background = Background(build_runner(settings, parts.jobs))
    schedule_gc(settings, background, store, index, parts.chunks)
    # Replication rules as jobs; event-triggered rules consume the registry's events
    # (compose/replication.py).
    replication = build_replication(settings, db, background, metrics, parts.jobs)
    event_sinks.extend(replication.sinks())  # the publisher's FanOut holds this list
    add_replication_routes(app, replication)
    trust.schedule(background)
    notifications.schedule(background)
    if mirror is not None:
        app[QUALIFY_NAME] = mirror.registry.qualify
        app.on_startup.append(mirror.start)
        app.on_cleanup.append(mirror.stop)
        mirror.schedule(background)
    app[METRICS] = metrics
    # Blob bodies are sent by sendfile(2) from these threads (api/sendfile.py).
    sendfile_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sendfile")
    app[SENDFILE_POOL] = sendfile_pool
    app[HEALTH] = HealthService(index, settings.data_dir, metrics, version=__version__,
                                role=settings.role, workers=settings.worker_count,
                                **readiness_checks(store))
    app.on_response_prepare.append(add_api_version)
    app.on_response_prepare.append(add_request_id)

    async def close_index(_app: web.Application) -> None:
        sendfile_pool.shutdown(wait=False, cancel_futures=True)
        await index.close()
        await store.aclose()

    app.on_cleanup.append(close_index)
    install_access(app, settings, db, audit, background)  # token endpoint, admin API, audit
    releases.install(app, settings.releases.retention_interval_seconds, background)
    add_routes(app)
    if settings.mirror.replicas.secret is not None and mirror is not None:
        add_replica_routes(app, settings.mirror.replicas.secret)
    add_ops_routes(app)
    if settings.p2p.clusters:  # this tier makes metadata and tracks swarms (docs/p2p.md)
        swarms = EdgeSwarms(DataDir(settings.data_dir).p2p, settings.p2p)
        app[EDGE_SWARMS] = swarms
        background.every("p2p state", IDLE_CHECK_SECONDS, swarms.remove_idle,
                         first_now=False)
    if mirror is not None and mirror.p2p is not None:  # a node's swarms, per blob
        app[NODE_P2P_STATUS] = mirror.p2p.snapshot
    add_p2p_routes(app)
    background.install(app)
    return app
