"""A real webhook receiver process (aiohttp) for the notification tests: it verifies each
request's HMAC signature, appends what it got to a JSON-lines file, and answers 200 (401
for a bad signature). After `PUT /hold` (until `DELETE /hold`) a request is recorded on
arrival and not answered: the far end of a delivery in flight when its sender dies.

    python -m tests.support.webhook_receiver --port P --secret S --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from tests.support.live import ServerProcess

HOLD_AT_MOST = 120.0  # seconds a held request waits, bounded like every test loop


def _app(secret: bytes, out: Path) -> web.Application:
    answer = asyncio.Event()  # clear: hold requests
    answer.set()

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        given = request.headers.get("Stablemirror-Signature-256", "")
        verified = hmac.compare_digest(expected, given)
        held = not answer.is_set()
        entry = {"time": time.time(), "verified": verified, "held": held,
                 "content_type": request.headers.get("Content-Type", ""),
                 "user_agent": request.headers.get("User-Agent", ""),
                 "body": json.loads(body) if verified else None}
        with out.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answer.wait(), HOLD_AT_MOST)
        return web.Response(status=200 if verified else 401)

    async def hold(request: web.Request) -> web.Response:
        if request.method == "PUT":
            answer.clear()
        else:
            answer.set()
        return web.Response(text="ok")

    async def ready(_request: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application()
    app.router.add_post("/events", events)
    app.router.add_put("/hold", hold)
    app.router.add_delete("/hold", hold)
    app.router.add_get("/v2/", ready)  # ServerProcess.start waits for this
    return app


class WebhookReceiver(ServerProcess):
    """The receiver as a child process; stop() and start() again on the same port model a
    receiver that is down for a while."""

    name = "webhook receiver"

    def __init__(self, workdir: Path, secret: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, workdir / "receiver.log")
        self.secret = secret
        self.out = workdir / "received.jsonl"

    @property
    def events_url(self) -> str:
        return f"{self.url}/events"

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        import sys
        return ([sys.executable, "-m", "tests.support.webhook_receiver", "--port",
                 str(self.port), "--secret", self.secret, "--out", str(self.out)], None)

    def hold(self, on: bool) -> None:
        """Leave requests unanswered (on) or answer them again (off, held ones too)."""
        r = requests.request("PUT" if on else "DELETE", f"{self.url}/hold", timeout=10)
        r.raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def events(self) -> list[dict[str, Any]]:
        """Every event of every verified request, in arrival order (duplicates kept)."""
        return [e for r in self.requests() if r["verified"] for e in r["body"]["events"]]

    def clear(self) -> None:
        self.out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(_app(args.secret.encode(), args.out), host="127.0.0.1",
                port=args.port, print=None)


if __name__ == "__main__":
    main()
