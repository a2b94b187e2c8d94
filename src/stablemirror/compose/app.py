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
from stablemirror.api.routes import add_routes
from stablemirror.api.telemetry import add_request_id, telemetry
from stablemirror.compose.auth import build_audit, install_access
from stablemirror.compose.background import Background
from stablemirror.compose.hot import with_hot_tier
from stablemirror.compose.mirror import build_mirror
from stablemirror.compose.releases import build_releases
from stablemirror.compose.scanning import build_scanning
from stablemirror.compose.trust import build_trust
from stablemirror.config import Settings
from stablemirror.index.db import Database
from stablemirror.index.sql import SqlIndex
from stablemirror.integrity.scrub import ServiceHealer
from stablemirror.metrics import Metrics
from stablemirror.registry.health import HealthService
from stablemirror.registry.hosted import HostedRegistry
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.tiered import TieredBlobStore

__all__ = ["build_app", "run_guarded"]  # run_guarded: server/prefork.py runs the app with it

READ_BUFSIZE = 1 << 20  # larger socket reads make pushes cheaper


def build_app(settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """`metrics`: server/prefork.py passes one in multiprocess mode; else a private one."""
    metrics = metrics or Metrics()
    cold_store = FilesystemBlobStore(settings.data_dir)  # the mirror's fetches publish here
    store = with_hot_tier(cold_store, settings, metrics)  # storage.hot: store/tiered.py
    db = Database(settings.index_url)
    index = SqlIndex(db)
    # telemetry first (outermost but for the connection guard, which only marks when a
    # request's headers were complete): it sees the final status and sends the body itself.
    app = web.Application(middlewares=[guard_middleware, telemetry, oci_errors],
                          handler_args={"read_bufsize": READ_BUFSIZE})
    app[CONNECTION_GUARD] = ConnectionGuard(settings.connections)
    audit = build_audit(settings, db)  # None unless auth (or audit.enabled) is on
    hosted = HostedRegistry(store, index, audit.record if audit is not None else None)
    mirror = build_mirror(settings, hosted, cold_store, index, db, metrics)
    routed = mirror.registry if mirror is not None else hosted
    # Release channels resolve per client in hosted namespaces (compose/releases.py).
    releases = build_releases(settings, db, index, metrics,
                              audit.record if audit is not None else None)
    registry = releases.wrap(routed, (lambda r: not mirror.registry.is_proxied(r))
                             if mirror is not None else (lambda _r: True))
    # Trust policies and verified reads wrap hosted and mirrored namespaces alike; with a
    # mirror, quarantined blobs heal from upstream (compose/trust.py).
    trust = build_trust(settings, registry, store, db, metrics,
                        audit=audit.record if audit is not None else None,
                        healer=ServiceHealer(registry, store) if mirror is not None else None)
    # Scanning policies decide pulls from scan results; scans read below trust (so an
    # unsigned image is still scanned) and attach their reports in the local index.
    scanning = build_scanning(settings, trust.registry, registry, hosted, store, db, metrics,
                              audit.record if audit is not None else None)
    app[REGISTRY] = scanning.registry
    app.on_startup.append(scanning.start)
    app.on_cleanup.append(scanning.stop)
    background = Background()  # every worker's loops, on one lifecycle
    trust.schedule(background)
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
                                role=settings.role, workers=settings.worker_count)
    app.on_response_prepare.append(add_api_version)
    app.on_response_prepare.append(add_request_id)

    async def close_index(_app: web.Application) -> None:
        sendfile_pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(store, TieredBlobStore):
            await store.aclose()
        await index.close()

    app.on_cleanup.append(close_index)
    install_access(app, settings, db, audit, background)  # token endpoint, admin API, audit
    releases.install(app, settings.releases.retention_interval_seconds, background)
    add_routes(app)
    add_ops_routes(app)
    background.install(app)
    return app
