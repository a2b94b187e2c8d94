"""The admin API under /api/v1: users, robots, role bindings, policies, keys, audit.

Callers authenticate with Basic credentials or a Bearer token and need `registry:Admin` on
`registry`. It is what `stablemirror ... --url` talks to; `--data-dir` does the same work
in-process through the same AuthAdmin.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from stablemirror.api.auth import basic_credentials, event, record, set_actor
from stablemirror.api.body import json_object_body
from stablemirror.api.context import context
from stablemirror.api.keys import AUDIT, AUTH, AUTH_ADMIN
from stablemirror.audit.log import AuditLog, AuditQuery
from stablemirror.audit.report import build, parse_when, render
from stablemirror.auth.admin import AdminError
from stablemirror.auth.policy import ADMIN, REGISTRY_RESOURCE
from stablemirror.auth.principals import ROBOT_PREFIX, Principal
from stablemirror.auth.service import LoginFailed
from stablemirror.auth.store import Conflict
from stablemirror.auth.tokens import TokenInvalid
from stablemirror.index.audit_events import DENIED, UNAUTHORIZED
from stablemirror.oci.errors import Denied, OCIError, Unauthorized
from stablemirror.registry.protocol import RequestContext

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminInvalid(OCIError):
    code, status, message = "INVALID_REQUEST", 400, "invalid admin request"


class AdminNotFound(OCIError):
    code, status, message = "NOT_FOUND", 404, "no such object"


class AdminConflict(OCIError):
    code, status, message = "CONFLICT", 409, "already exists"


async def _caller(request: web.Request) -> Principal:
    auth = request.app[AUTH]
    creds = basic_credentials(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    try:
        if creds is not None:
            who = (await auth.login(*creds)).principal
        elif scheme.lower() == "bearer" and value.strip():
            who = (await auth.bearer(value.strip())).principal
        else:
            who = None
    except (LoginFailed, TokenInvalid) as err:
        who, reason = None, getattr(err, "reason", "")
    else:
        reason = "credentials required"
    if who is None:
        await record(request, event(request, "request.denied", creds[0] if creds else "",
                                    UNAUTHORIZED, method=request.method, path=request.path,
                                    reason=reason))
        challenge = Unauthorized(reason=reason)
        challenge.headers["WWW-Authenticate"] = 'Basic realm="stablemirror admin"'
        raise challenge
    set_actor(request, who.id)
    ctx = context(request)
    decision = await auth.decide(who, ADMIN, REGISTRY_RESOURCE, ctx.client, ctx.user_agent)
    if not decision.allowed:
        await record(request, event(request, "request.denied", who.id, DENIED,
                                    method=request.method, path=request.path,
                                    reason=decision.explain()))
        raise Denied(reason=decision.explain())
    return who


async def require_admin(request: web.Request) -> Principal:
    """The caller, authenticated and holding `registry:Admin` (for other admin routes)."""
    return await _caller(request)


def admin(handler: Callable[[web.Request, RequestContext], Awaitable[Any]]) -> Handler:
    """Authenticate, authorize and turn domain errors into API errors, for one handler."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        await _caller(request)
        try:
            result = await handler(request, context(request))
        except Conflict as err:
            raise AdminConflict(kind=err.what, name=err.name) from None
        except AdminError as err:
            cls = AdminNotFound if err.status == 404 else AdminInvalid
            raise cls(field=err.field, reason=err.reason) from None
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)
    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object_body(request, AdminInvalid)


def _roles(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(r.get("role", "")), str(r.get("repositories", "")))
            for r in doc.get("roles", []) if isinstance(r, dict)]


@admin
async def list_users(request: web.Request, ctx: RequestContext) -> Any:
    kind = "robot" if request.path.endswith("/robots") else "user"
    return [a.to_json() for a in await request.app[AUTH_ADMIN].list_accounts(kind)]


@admin
async def add_user(request: web.Request, ctx: RequestContext) -> Any:
    doc = await _body(request)
    account = await request.app[AUTH_ADMIN].add_user(
        ctx, str(doc.get("name", "")), str(doc.get("password", "")),
        {str(k): str(v) for k, v in (doc.get("tags") or {}).items()},
        [str(g) for g in doc.get("groups") or []], _roles(doc))
    return web.json_response(account.to_json(), status=201)


@admin
async def update_user(request: web.Request, ctx: RequestContext) -> Any:
    doc = await _body(request)
    await request.app[AUTH_ADMIN].update_user(
        ctx, request.match_info["name"], doc.get("password"), doc.get("tags"),
        doc.get("groups"), doc.get("disabled"))
    return {"updated": request.match_info["name"]}


@admin
async def delete_user(request: web.Request, ctx: RequestContext) -> Any:
    await request.app[AUTH_ADMIN].delete_user(ctx, request.match_info["name"])
    return {"deleted": request.match_info["name"]}


@admin
async def create_robot(request: web.Request, ctx: RequestContext) -> Any:
    doc = await _body(request)
    expires = doc.get("expires_at")
    if expires is None and doc.get("expires_in_days") is not None:
        expires = time.time() + timedelta(days=float(doc["expires_in_days"])).total_seconds()
    account, secret = await request.app[AUTH_ADMIN].create_robot(
        ctx, str(doc.get("name", "")), _roles(doc), None if expires is None else float(expires),
        str(doc.get("description", "")))
    return web.json_response({**account.to_json(), "username": ROBOT_PREFIX + account.name,
                              "secret": secret}, status=201)


@admin
async def revoke_robot(request: web.Request, ctx: RequestContext) -> Any:
    await request.app[AUTH_ADMIN].revoke_robot(ctx, request.match_info["name"])
    return {"revoked": request.match_info["name"]}


@admin
async def list_bindings(request: web.Request, ctx: RequestContext) -> Any:
    return [b.to_json() for b in await request.app[AUTH_ADMIN].bindings()]


@admin
async def change_binding(request: web.Request, ctx: RequestContext) -> Any:
    doc = await _body(request)
    args = (str(doc.get("principal_kind", "")), str(doc.get("principal", "")),
            str(doc.get("role", "")), str(doc.get("repositories", "")))
    if request.method == "DELETE":
        await request.app[AUTH_ADMIN].unbind(ctx, *args)
        return {"unbound": list(args)}
    await request.app[AUTH_ADMIN].bind(ctx, *args)
    return web.json_response({"bound": list(args)}, status=201)


@admin
async def list_policies(request: web.Request, ctx: RequestContext) -> Any:
    return await request.app[AUTH_ADMIN].policies()


@admin
async def put_policy(request: web.Request, ctx: RequestContext) -> Any:
    name = request.match_info["name"]
    created = await request.app[AUTH_ADMIN].apply_policy(ctx, name, await _body(request))
    return web.json_response({"applied": name, "created": created},
                             status=201 if created else 200)


@admin
async def delete_policy(request: web.Request, ctx: RequestContext) -> Any:
    await request.app[AUTH_ADMIN].delete_policy(ctx, request.match_info["name"])
    return {"deleted": request.match_info["name"]}


@admin
async def test_policy(request: web.Request, ctx: RequestContext) -> Any:
    doc = await _body(request)
    decision = await request.app[AUTH_ADMIN].test(
        str(doc.get("kind", "user")), str(doc.get("name", "")), str(doc.get("action", "")),
        str(doc.get("resource", "")), str(doc.get("client", "")),
        {str(k): str(v) for k, v in (doc.get("tags") or {}).items()},
        [str(g) for g in doc.get("groups") or []])
    return decision.to_json()


@admin
async def rotate_key(request: web.Request, ctx: RequestContext) -> Any:
    kid = await request.app[AUTH_ADMIN].rotate_key(ctx)
    await request.app[AUTH].tokens.keys.load()
    return {"kid": kid}


def _audit(request: web.Request) -> AuditLog:
    audit = request.app.get(AUDIT)
    if audit is None:
        raise AdminNotFound(field="audit", reason="auditing is off")
    return audit


@admin
async def audit_verify(request: web.Request, ctx: RequestContext) -> Any:
    return (await _audit(request).verify()).to_json()


@admin
async def audit_prune(request: web.Request, ctx: RequestContext) -> Any:
    days = float((await _body(request)).get("older_than_days", 180))
    before = time.time() - timedelta(days=days).total_seconds()
    checkpoint = await _audit(request).prune_older_than(before, actor=ctx.actor or "")
    return {"checkpoint": None if checkpoint is None else checkpoint.payload}


@admin
async def audit_report(request: web.Request, ctx: RequestContext) -> Any:
    q = request.query
    try:
        query = AuditQuery(since=parse_when(q["since"]) if q.get("since") else None,
                           until=parse_when(q["until"]) if q.get("until") else None,
                           repository=q.get("repo") or None, actor=q.get("user") or None)
    except ValueError as err:
        raise AdminInvalid(field="since/until", reason=str(err)) from None
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv", "table"):
        raise AdminInvalid(field="format", reason="use csv, json or table")
    report = build(await _audit(request).query(query))
    if fmt == "json":
        return report.to_json()
    content_type = "text/csv" if fmt == "csv" else "text/plain"
    return web.Response(text=render(report, fmt), content_type=content_type)


# The admin API, by the name of each operation: the CLI's --url mode calls the same names
# (cli/admin_client.py), so a route is written here once.
ADMIN_ROUTES: dict[str, tuple[str, str, Handler]] = {
    "list_users": ("GET", "/api/v1/users", list_users),
    "add_user": ("POST", "/api/v1/users", add_user),
    "update_user": ("PATCH", "/api/v1/users/{name}", update_user),
    "delete_user": ("DELETE", "/api/v1/users/{name}", delete_user),
    "list_robots": ("GET", "/api/v1/robots", list_users),
    "create_robot": ("POST", "/api/v1/robots", create_robot),
    "revoke_robot": ("DELETE", "/api/v1/robots/{name}", revoke_robot),
    "bindings": ("GET", "/api/v1/bindings", list_bindings),
    "bind": ("POST", "/api/v1/bindings", change_binding),
    "unbind": ("DELETE", "/api/v1/bindings", change_binding),
    "policies": ("GET", "/api/v1/policies", list_policies),
    "apply_policy": ("PUT", "/api/v1/policies/{name}", put_policy),
    "delete_policy": ("DELETE", "/api/v1/policies/{name}", delete_policy),
    "test_policy": ("POST", "/api/v1/policy-test", test_policy),
    "rotate_key": ("POST", "/api/v1/keys/rotate", rotate_key),
    "audit_verify": ("GET", "/api/v1/audit/verify", audit_verify),
    "audit_prune": ("POST", "/api/v1/audit/prune", audit_prune),
    "audit_report": ("GET", "/api/v1/audit/report", audit_report),
}


def add_admin_routes(app: web.Application) -> None:
    for method, path, handler in ADMIN_ROUTES.values():
        if method == "GET":
            app.router.add_get(path, handler)  # HEAD too, as for every GET route
        else:
            app.router.add_route(method, path, handler)
