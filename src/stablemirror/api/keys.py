"""Typed application state: what the composition root hands to handlers.

The value types are named for the type checker only: importing them would load access
control, the audit log and their SQLAlchemy and cryptography into every process, while a
node without auth uses none of them (docs/footprint.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from stablemirror.audit.log import AuditLog
    from stablemirror.auth.admin import AuthAdmin
    from stablemirror.auth.config import AuthSettings
    from stablemirror.auth.service import AuthService
    from stablemirror.metrics import Metrics
    from stablemirror.registry.health import HealthService
    from stablemirror.registry.protocol import RegistryService

REGISTRY: web.AppKey[RegistryService] = web.AppKey("registry")
SENDFILE_POOL = web.AppKey("sendfile_pool", ThreadPoolExecutor)
# containerd's `?ns=<registry>`: (ns, name) -> repository name; present when mirroring.
QUALIFY_NAME: web.AppKey[Callable[[str, str], str]] = web.AppKey("qualify_name")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
HEALTH: web.AppKey[HealthService] = web.AppKey("health")
# Access control and audit: AUTH present only when auth is on, AUDIT only when auditing.
AUTH: web.AppKey[AuthService] = web.AppKey("auth")
AUTH_ADMIN: web.AppKey[AuthAdmin] = web.AppKey("auth_admin")
AUTH_SETTINGS: web.AppKey[AuthSettings] = web.AppKey("auth_settings")
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit")
