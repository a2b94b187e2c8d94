"""Composition of access control and audit (called from app.py, the composition root).

    AuditLog      the hash-chained trail (on when auth is on, or audit.enabled)
      + retention and forwarding jobs in every worker (audit/jobs.py)
    AuthService   identities, tokens, policy decisions (only with auth.enabled)
      + token endpoint, JWKS and admin API routes, the key reload/rotation loop
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from stablemirror.api.keys import AUDIT, AUTH, AUTH_ADMIN, AUTH_SETTINGS
from stablemirror.compose.background import Background
from stablemirror.compose.layout import DataDir
from stablemirror.config import Settings
from stablemirror.jobs.runner import JobContext

# The audit log and access control (cryptography, JWT, argon2, the admin API's rich
# reports) are imported by the functions below that build them: a server without auth or
# audit never loads them (docs/footprint.md).
if TYPE_CHECKING:
    from stablemirror.audit.log import AuditLog
    from stablemirror.auth.admin import AuthAdmin
    from stablemirror.auth.passwords import Passwords
    from stablemirror.auth.store import AuthStore
    from stablemirror.index.db import Database

log = logging.getLogger("stablemirror.auth")


def audit_enabled(settings: Settings) -> bool:
    enabled = settings.audit.enabled
    return settings.auth.enabled if enabled is None else enabled


def checkpoint_key_file(settings: Settings) -> Path:
    return settings.audit.checkpoint_key_file or DataDir(settings.data_dir).audit_checkpoint_key


def build_audit(settings: Settings, db: Database | None) -> AuditLog | None:
    """`db`: SQLAlchemy's; None on a node's sqlite3 index, which runs without audit."""
    if not audit_enabled(settings):
        return None
    if db is None:
        raise ValueError("audit needs database.backend sqlalchemy")
    from stablemirror.audit.log import AuditLog

    return AuditLog(db, checkpoint_key_file(settings))


def build_admin(settings: Settings, db: Database) -> tuple[AuthStore, Passwords, AuthAdmin]:
    """The administrative half, also used in-process by the CLI's --data-dir mode."""
    from stablemirror.auth.admin import AuthAdmin
    from stablemirror.auth.passwords import Passwords
    from stablemirror.auth.service import PolicyCache
    from stablemirror.auth.store import AuthStore

    store = AuthStore(db)
    passwords = Passwords()
    policies = PolicyCache(store, settings.auth.public_repositories)
    grace = settings.auth.refresh_ttl_seconds + settings.auth.token_ttl_seconds
    return store, passwords, AuthAdmin(db, store, passwords, policies, grace)


def install_access(app: web.Application, settings: Settings, db: Database | None,
                   audit: AuditLog | None, background: Background) -> None:
    if audit is not None:
        app[AUDIT] = audit
        _audit_jobs(app, settings, audit, background)
    if settings.auth.enabled:
        if db is None:
            raise ValueError("auth needs database.backend sqlalchemy")
        _install_auth(app, settings, db, background)


def _audit_jobs(app: web.Application, settings: Settings, audit: AuditLog,
                background: Background) -> None:
    from stablemirror.audit.forward import Forwarder
    from stablemirror.audit.jobs import retention_job

    cfg = settings.audit
    forwarder = None
    if cfg.forward_file is not None or cfg.forward_syslog is not None:
        forwarder = Forwarder(audit, DataDir(settings.data_dir).audit_forward_state,
                              cfg.forward_file, cfg.forward_syslog)

    async def start(_app: web.Application) -> None:
        # The checkpoint key exists before the first prune or verify needs it.
        await asyncio.to_thread(audit.key)

    prune = retention_job(audit, cfg.retention_days)

    async def retention(_ctx: JobContext) -> None:
        await prune()

    background.job("audit.retention", cfg.prune_interval_seconds, retention)
    if forwarder is not None:
        forward = forwarder

        async def forwarding(_ctx: JobContext) -> None:
            await forward.run_once()

        # Per host: the destination (a file, a syslog socket) and the position file are
        # this replica's (docs/jobs.md).
        background.job("audit.forward", cfg.forward_interval_seconds, forwarding,
                       per_host=True)

    async def stop(_app: web.Application) -> None:
        if forwarder is not None:
            await forwarder.run_once()  # what committed before shutdown still goes out
            forwarder.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def _install_auth(app: web.Application, settings: Settings, db: Database,
                  background: Background) -> None:
    from stablemirror.api.admin import add_admin_routes
    from stablemirror.api.auth import add_token_routes
    from stablemirror.auth import keys
    from stablemirror.auth.keys import KeyRing
    from stablemirror.auth.oidc import OidcVerifier
    from stablemirror.auth.service import AuthService
    from stablemirror.auth.tokens import TokenService

    cfg = settings.auth
    store, passwords, admin = build_admin(settings, db)
    ring = KeyRing(db)
    tokens = TokenService(ring, cfg.issuer, cfg.service, cfg.token_ttl_seconds,
                          cfg.refresh_ttl_seconds)
    sessions: list[aiohttp.ClientSession] = []

    def session() -> aiohttp.ClientSession:
        if not sessions:  # created lazily, inside the running loop
            sessions.append(aiohttp.ClientSession())
        return sessions[0]

    oidc = OidcVerifier(cfg.oidc, session) if cfg.oidc else None
    app[AUTH] = AuthService(store, admin.policy_cache, tokens, passwords, oidc)
    app[AUTH_ADMIN] = admin
    app[AUTH_SETTINGS] = cfg
    rotate_after = (timedelta(days=cfg.key_rotation_days).total_seconds()
                    if cfg.key_rotation_days else None)
    grace = admin.key_grace_seconds

    async def refresh_keys() -> None:
        await db.write(lambda c: keys.ensure(c, rotate_after, grace))
        await ring.load()

    async def start(_app: web.Application) -> None:
        await refresh_keys()
        password = settings.admin_password
        if password is not None and await admin.bootstrap_admin(password.get_secret_value()):
            log.info("created the admin user from STABLEMIRROR_ADMIN_PASSWORD")

    # The first refresh ran at start-up, before the bootstrap admin needs the keys.
    background.every("signing keys", cfg.key_reload_seconds, refresh_keys, first_now=False)

    async def stop(_app: web.Application) -> None:
        for s in sessions:
            await s.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    add_token_routes(app)
    add_admin_routes(app)
