"""Operations endpoints: /healthz, /readyz, /status and /metrics (outside /v2, no auth).

/healthz answers while the process serves HTTP at all; /readyz only when the index answers
and the data dir takes writes, with 503 and the reason otherwise, so a load balancer stops
sending pulls to a replica that would fail them.
"""

from __future__ import annotations

from aiohttp import web

from stablemirror.api.keys import HEALTH, METRICS
from stablemirror.metrics import CONTENT_TYPE


async def healthz(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    checks = await request.app[HEALTH].readiness()
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        reason = "; ".join(f"{name}: {result}" for name, result in failing.items())
        return web.json_response({"ready": False, "reason": reason, "checks": checks},
                                 status=503)
    return web.json_response({"ready": True, "checks": checks})


async def status(request: web.Request) -> web.StreamResponse:
    return web.json_response(await request.app[HEALTH].status())


async def metrics(request: web.Request) -> web.StreamResponse:
    await request.app[HEALTH].refresh_metrics()
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE})


def add_ops_routes(app: web.Application) -> None:
    # Route names double as the `route` label of the HTTP metrics.
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/status", status, name="status")
    app.router.add_get("/metrics", metrics, name="metrics")
