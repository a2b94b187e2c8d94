"""The request's RequestContext: who asks (set by the auth layer) and from where."""

from __future__ import annotations

import uuid

from aiohttp import web

from stablemirror.registry.protocol import RequestContext

CONTEXT_KEY = "stablemirror.context"
ACTOR_KEY = "stablemirror.actor"  # set by authentication when it knows the caller


def context(request: web.Request) -> RequestContext:
    ctx = request.get(CONTEXT_KEY)
    if isinstance(ctx, RequestContext):
        return ctx
    ctx = RequestContext(
        actor=request.get(ACTOR_KEY),
        client=request.remote or "",
        user_agent=request.headers.get("User-Agent", ""),
        request_id=request.headers.get("X-Request-ID") or uuid.uuid4().hex,
        # several Via lines are one list, in order (RFC 9110 5.3)
        via=", ".join(request.headers.getall("Via", [])),
        method=request.method,
        ns=request.query.get("ns", ""),
        client_id=request.headers.get("Stablemirror-Client-Id", ""),
        forwarded_for=request.headers.get("X-Forwarded-For", ""),
    )
    request[CONTEXT_KEY] = ctx
    return ctx
