"""The release admin API under /api/v1/releases/<repository>/... (docs/releases.md).

Moves (promote, split, rollback, retention) need `registry:Promote` on the repository;
reads (history, versions) need `registry:Pull`. With auth off the registry is open and so
is this API (the caller is recorded as anonymous@ADDRESS). Callers authenticate with Basic
credentials or a Bearer token, as for the rest of the admin API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from stablemirror.api.auth import basic_credentials, event, record, set_actor
from stablemirror.api.body import json_object_body
from stablemirror.api.context import context
from stablemirror.api.keys import AUTH
from stablemirror.auth.policy import PROMOTE, PULL, repository_resource
from stablemirror.index.audit_events import DENIED, UNAUTHORIZED
from stablemirror.oci.errors import Denied, ReleaseInvalid, Unauthorized
from stablemirror.registry.protocol import RequestContext
from stablemirror.releases.retention_job import Retention
from stablemirror.releases.service import ReleaseService

RELEASES = web.AppKey("releases", ReleaseService)
RETENTION = web.AppKey("release_retention", Retention)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _authorize(request: web.Request, repository: str, action: str) -> None:
    auth = request.app.get(AUTH)
    if auth is None:
        return
    from stablemirror.auth.service import LoginFailed  # with auth on only (docs/footprint.md)
    from stablemirror.auth.tokens import TokenInvalid

    creds = basic_credentials(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    reason = "credentials required"
    who = None
    try:
        if creds is not None:
            who = (await auth.login(*creds)).principal
        elif scheme.lower() == "bearer" and value.strip():
            who = (await auth.bearer(value.strip())).principal
    except (LoginFailed, TokenInvalid) as err:
        reason = getattr(err, "reason", "")
    if who is None:
        await record(request, event(request, "request.denied", creds[0] if creds else "",
                                    UNAUTHORIZED, repository, method=request.method,
                                    path=request.path, reason=reason))
        challenge = Unauthorized(reason=reason)
        challenge.headers["WWW-Authenticate"] = 'Basic realm="stablemirror admin"'
        raise challenge
    set_actor(request, who.id)
    ctx = context(request)
    decision = await auth.decide(who, action, repository_resource(repository), ctx.client,
                                 ctx.user_agent)
    if not decision.allowed:
        await record(request, event(request, "request.denied", who.id, DENIED, repository,
                                    method=request.method, path=request.path,
                                    reason=decision.explain()))
        raise Denied(repository=repository, reason=decision.explain())


def _handler(action: str, fn: Callable[[web.Request, RequestContext, str], Awaitable[Any]]
             ) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        repository = request.match_info["repository"]
        await _authorize(request, repository, action)
        result = await fn(request, context(request), repository)
        return web.json_response(result)
    return wrapped


async def _body(request: web.Request) -> dict[str, Any]:
    return await json_object_body(request, ReleaseInvalid)


def _text(doc: dict[str, Any], key: str, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ReleaseInvalid(field=key, reason="a string is required")
    return value


async def promote(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    doc = await _body(request)
    return await request.app[RELEASES].promote(
        ctx, repository, _text(doc, "version"), _text(doc, "channel"),
        bool(doc.get("force", False)), _text(doc, "reason", False))


async def split(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    doc = await _body(request)
    weights = doc.get("weights")
    if not isinstance(weights, dict):
        raise ReleaseInvalid(field="weights", reason="an object VERSION -> WEIGHT is required")
    return await request.app[RELEASES].split(
        ctx, repository, _text(doc, "channel"), weights, bool(doc.get("force", False)),
        _text(doc, "reason", False))


async def rollback(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    doc = await _body(request)
    return await request.app[RELEASES].rollback(
        ctx, repository, _text(doc, "channel"), _text(doc, "to", False) or None,
        _text(doc, "reason", False))


async def history(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    return await request.app[RELEASES].history(repository,
                                               request.query.get("channel") or None)


async def versions(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    return await request.app[RELEASES].versions(repository)


async def retention(request: web.Request, ctx: RequestContext, repository: str) -> Any:
    doc = await _body(request)
    per_line, days = doc.get("keep_per_line"), doc.get("keep_days")
    if per_line is not None and (not isinstance(per_line, int) or per_line < 0):
        raise ReleaseInvalid(field="keep_per_line", reason="a non-negative integer")
    if days is not None and (not isinstance(days, int | float) or days < 0):
        raise ReleaseInvalid(field="keep_days", reason="a non-negative number")
    dry_run = bool(doc.get("dry_run", False))
    removals = await request.app[RETENTION].run(ctx, dry_run, repository, per_line, days)
    return {"dry_run": dry_run, "removed" if not dry_run else "would_remove":
            [r.to_json() for r in removals]}


def add_release_routes(app: web.Application) -> None:
    r = app.router
    base = "/api/v1/releases/{repository:.+}"
    r.add_post(base + "/promote", _handler(PROMOTE, promote))
    r.add_post(base + "/split", _handler(PROMOTE, split))
    r.add_post(base + "/rollback", _handler(PROMOTE, rollback))
    r.add_post(base + "/retention", _handler(PROMOTE, retention))
    r.add_get(base + "/history", _handler(PULL, history))
    r.add_get(base + "/versions", _handler(PULL, versions))
