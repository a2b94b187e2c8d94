"""The replication admin API under /api/v1/replication (docs/replication.md).

With `--auth`, callers need `registry:Admin` (Basic credentials or a Bearer token, as for
the rest of the admin API); without it the registry is open and so is this API, like the
release API."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from stablemirror.api.body import json_object_body
from stablemirror.api.keys import AUTH
from stablemirror.oci.errors import OCIError


class ReplicationInvalid(OCIError):
    code, status, message = "REPLICATION_INVALID", 400, "invalid replication request"


class ReplicationAdmin(Protocol):
    async def status_rows(self) -> list[dict[str, Any]]: ...

    async def run_now(self, name: str, dry_run: bool = False) -> Any: ...

    async def enqueue_run(self, name: str) -> int | None: ...


REPLICATION: web.AppKey[ReplicationAdmin] = web.AppKey("replication")


async def _authorize(request: web.Request) -> None:
    if request.app.get(AUTH) is not None:
        # Imported here: the admin API pulls in auth, audit and their crypto, which a
        # server without --auth never loads (docs/footprint.md).
        from stablemirror.api.admin import require_admin

        await require_admin(request)


async def status(request: web.Request) -> web.StreamResponse:
    await _authorize(request)
    return web.json_response({"rules": await request.app[REPLICATION].status_rows()})


async def run(request: web.Request) -> web.StreamResponse:
    """`{"dry_run": true}`: the plan, computed now; else a `replication.run` job is
    enqueued (its id is returned) and the queue runs it."""
    await _authorize(request)
    doc = await json_object_body(request, ReplicationInvalid) if request.body_exists else {}
    name = request.match_info["rule"]
    parts = request.app[REPLICATION]
    try:
        if doc.get("dry_run"):
            result = await parts.run_now(name, dry_run=True)
            return web.json_response(result.to_json())
        return web.json_response({"rule": name, "job": await parts.enqueue_run(name)},
                                 status=202)
    except ValueError as e:  # an unknown rule
        raise ReplicationInvalid(rule=name, reason=str(e)) from None


def add_replication_routes(app: web.Application, parts: ReplicationAdmin) -> None:
    app[REPLICATION] = parts
    app.router.add_get("/api/v1/replication/status", status)
    app.router.add_post("/api/v1/replication/rules/{rule}/run", run)
