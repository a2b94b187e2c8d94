"""Typed application state: what the composition root hands to handlers."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from stablemirror.audit.log import AuditLog
from stablemirror.auth.admin import AuthAdmin
from stablemirror.auth.config import AuthSettings
from stablemirror.auth.service import AuthService
from stablemirror.metrics import Metrics
from stablemirror.registry.health import HealthService
from stablemirror.registry.protocol import RegistryService

REGISTRY = web.AppKey("registry", RegistryService)
SENDFILE_POOL = web.AppKey("sendfile_pool", ThreadPoolExecutor)
# containerd's `?ns=<registry>`: (ns, name) -> repository name; present when mirroring.
QUALIFY_NAME: web.AppKey[Callable[[str, str], str]] = web.AppKey("qualify_name")
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", HealthService)
# Access control and audit: AUTH present only when auth is on, AUDIT only when auditing.
AUTH = web.AppKey("auth", AuthService)
AUTH_ADMIN = web.AppKey("auth_admin", AuthAdmin)
AUTH_SETTINGS = web.AppKey("auth_settings", AuthSettings)
AUDIT = web.AppKey("audit", AuditLog)
