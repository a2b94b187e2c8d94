"""The background work of one worker process, on one lifecycle.

Each loop starts once the app has started (after the hooks that open what it uses: the
upstream client, the release service) and is cancelled and awaited at shutdown, before
on_cleanup closes the index and the client. Work that must run once across workers and
replicas (GC, scrub, retention, audit forwarding, eviction) is a job of the index's queue
instead (`job`, docs/jobs.md): this worker's `JobRunner` is one more loop here. Loops that
keep this process's own state fresh (access-time flushes, upstream health, signing keys)
stay plain loops (`run`, `every`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from stablemirror.jobs.runner import Handler, JobRunner

log = logging.getLogger("stablemirror.background")

Loop = Callable[[], Coroutine[Any, Any, None]]


class Background:
    def __init__(self, runner: JobRunner | None = None) -> None:
        self._loops: list[tuple[str, Loop]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.runner = runner

    def job(self, kind: str, every: float, handler: Handler, *, per_host: bool = False,
            first_now: bool = True) -> None:
        """Run `handler` as the periodic job `kind`: once per `every` seconds across every
        replica sharing the index (per_host: once per replica), docs/jobs.md."""
        if self.runner is None:
            raise RuntimeError("Background(runner=...) is needed for jobs")
        self.runner.every(kind, every, handler, per_host=per_host, first_now=first_now)

    def run(self, name: str, loop: Loop) -> None:
        """Run `loop()` in the background from start-up until shutdown."""
        self._loops.append((name, loop))

    def every(self, name: str, interval: float, job: Callable[[], Awaitable[object]], *,
              first_now: bool = True) -> None:
        """Run `job` every `interval` seconds (first at once, or after one interval); a
        failure is logged and the job runs again at its next time."""
        async def periodic() -> None:
            if not first_now:
                await asyncio.sleep(interval)
            while True:
                try:
                    await job()
                except Exception:
                    log.exception("%s failed; next run in %.0fs", name, interval)
                await asyncio.sleep(interval)

        self.run(name, periodic)

    def install(self, app: web.Application) -> None:
        """Call last in the composition: start-up hooks run in the order they were added,
        so the loops start after everything they use has."""
        app.on_startup.append(self._start)
        app.on_shutdown.insert(0, self._stop)  # stopped before any other shutdown hook

    async def _start(self, _app: web.Application) -> None:
        if self.runner is not None:
            self._loops.append(("jobs", self.runner.run))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(run(), name=name) for name, run in self._loops]

    async def _stop(self, _app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
