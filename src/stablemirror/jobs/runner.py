"""Runs the jobs of the index's queue in one worker process (docs/jobs.md).

Every worker of every replica runs one `JobRunner`. Each poll it inserts the slots of its
periodic jobs that are due (one dedup key per kind and period, so a slot is inserted once
across all replicas; per-host kinds add the replica id to the key and are pinned to it),
then claims due jobs of the kinds it has handlers for, up to `concurrency` at once. While a
handler runs, a heartbeat extends its lease every third of `lease_seconds`; if the lease is
lost (another runner took the job over after a stall, or the index was unreachable for a
whole lease), the handler is cancelled. A handler's exception fails the job (retried after a
backoff, or dead); at shutdown running jobs are released for another runner to take at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from stablemirror.index.job_queue import Job, JobQueue
from stablemirror.jobs.config import JobSettings

log = logging.getLogger("stablemirror.jobs")

PRUNE_KIND = "jobs.prune"
PRUNE_EVERY = 3600.0


@dataclass
class JobContext:
    """What a handler gets: its job, and whether it still holds the job's lease."""

    job: Job
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def keep_going(self) -> bool:
        return not self.lost.is_set()


Handler = Callable[[JobContext], Coroutine[Any, Any, object]]


@dataclass(frozen=True, slots=True)
class Periodic:
    kind: str
    every: float
    per_host: bool

    def slot(self, now: float) -> int:
        return math.floor(now / self.every)

    def dedup_key(self, slot: int, replica: str) -> str:
        where = f"@{replica}" if self.per_host else ""
        return f"{self.kind}{where}/every={self.every:g}/{slot}"


class JobRunner:
    def __init__(self, queue: JobQueue, settings: JobSettings, replica: str,
                 owner: str | None = None) -> None:
        self.queue = queue
        self.settings = settings
        self.replica = replica
        self.owner = owner or f"{replica}:{os.getpid()}"
        self._handlers: dict[str, tuple[Handler, int | None]] = {}
        self._periodic: list[Periodic] = []
        self._next_slot: dict[str, int] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self.every(PRUNE_KIND, PRUNE_EVERY, self._prune, first_now=False)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def handle(self, kind: str, handler: Handler, max_attempts: int | None = None) -> None:
        """Run jobs of `kind` with `handler` (enqueued by anyone, or periodic below)."""
        self._handlers[kind] = (handler, max_attempts)

    def every(self, kind: str, seconds: float, handler: Handler, *, per_host: bool = False,
              first_now: bool = True, max_attempts: int | None = None) -> None:
        """Run `handler` once per `seconds` across all replicas (per_host: once per replica),
        first in the current period, or (first_now=False) from the next one on."""
        self.handle(kind, handler, max_attempts)
        periodic = Periodic(kind, seconds, per_host)
        self._periodic = [p for p in self._periodic if p.kind != kind] + [periodic]
        now_slot = periodic.slot(time.time())
        self._next_slot[kind] = now_slot if first_now else now_slot + 1

    async def run(self) -> None:
        """Schedule, claim and run until cancelled; then release what is running."""
        try:
            while True:
                try:
                    await self.tick()
                except Exception as e:  # the index is down: try again next poll
                    log.warning("job runner: %s: %s", type(e).__name__, e)
                await asyncio.sleep(self._sleep())
        finally:
            await self.stop()

    async def tick(self) -> None:
        await self._schedule()
        while len(self._running) < self.settings.concurrency:
            job = await self._claim()
            if job is None:
                return
            task = asyncio.get_running_loop().create_task(self._run(job),
                                                          name=f"job {job.id} {job.kind}")
            self._running[job.id] = task
            task.add_done_callback(self._forget(job.id))

    async def _claim(self) -> Job | None:
        """A claim that a shutdown cannot strand: the claiming transaction runs on in its
        thread when we are cancelled, so wait for it and give back what it took."""
        claim = asyncio.ensure_future(self.queue.claim(
            self.owner, self.kinds, self.settings.lease_seconds, self.replica))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                late = await claim
                if late is not None:
                    await self.queue.release(late.id, self.owner)
            raise

    async def stop(self) -> None:
        """Cancel the running jobs and give them back for another runner to take at once
        (a job claimed a moment ago may not have started: its task never ran a line)."""
        running = list(self._running.items())
        for _job_id, task in running:
            task.cancel()
        await asyncio.gather(*(task for _id, task in running), return_exceptions=True)
        for job_id, _task in running:
            with contextlib.suppress(Exception):
                await self.queue.release(job_id, self.owner)

    def _forget(self, job_id: int) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(job_id, None)
        return done

    def _sleep(self) -> float:
        now = time.time()
        until = [p.every * self._next_slot[p.kind] - now for p in self._periodic]
        return max(0.01, min([self.settings.poll_seconds, *until]))

    async def _schedule(self) -> None:
        now = time.time()
        for p in self._periodic:
            slot = p.slot(now)
            if slot < self._next_slot[p.kind]:
                continue
            _handler, max_attempts = self._handlers[p.kind]
            result = await self.queue.enqueue_periodic(
                p.kind, p.dedup_key(slot, self.replica), run_at=slot * p.every,
                max_attempts=max_attempts, pinned_to=self.replica if p.per_host else None)
            if result != "busy":  # busy: the last run is unfinished; ask again next poll
                self._next_slot[p.kind] = slot + 1

    async def _run(self, job: Job) -> None:
        handler, _max_attempts = self._handlers[job.kind]
        ctx = JobContext(job)
        work: asyncio.Task[object] = asyncio.get_running_loop().create_task(handler(ctx))
        beat = asyncio.get_running_loop().create_task(self._heartbeat(job, work, ctx))
        started = time.monotonic()
        try:
            await work
        except asyncio.CancelledError:
            if ctx.lost.is_set():
                log.warning("job %d %s: lease lost; another runner may take it over",
                            job.id, job.kind)
                return
            work.cancel()
            raise  # stop() releases the job
        except Exception as e:
            log.warning("job %d %s failed (attempt %d of %d): %s: %s", job.id, job.kind,
                        job.attempts, job.max_attempts, type(e).__name__, e)
            await self._record(self.queue.fail(job.id, self.owner, f"{type(e).__name__}: {e}"))
        else:
            log.debug("job %d %s done in %.2fs", job.id, job.kind, time.monotonic() - started)
            await self._record(self.queue.complete(job.id, self.owner))
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    @staticmethod
    async def _record(outcome: Awaitable[object]) -> None:
        """Write a job's outcome; if the index cannot take it, the lease runs out and the
        job runs again elsewhere (at least once)."""
        try:
            await outcome
        except Exception as e:
            log.warning("job outcome not recorded: %s: %s", type(e).__name__, e)

    async def _heartbeat(self, job: Job, work: asyncio.Task[object], ctx: JobContext) -> None:
        lease = self.settings.lease_seconds
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(lease / 3)
            try:
                held = await self.queue.heartbeat(job.id, self.owner, lease)
            except Exception as e:  # the index is unreachable: the lease still runs
                log.warning("job %d %s: heartbeat failed: %s", job.id, job.kind, e)
                held = time.monotonic() - renewed < lease
            else:
                renewed = time.monotonic()
            if not held:
                ctx.lost.set()
                work.cancel()
                return

    async def _prune(self, _ctx: JobContext) -> None:
        now = time.time()
        removed = await self.queue.prune(now - self.settings.keep_done_seconds,
                                         now - self.settings.keep_dead_seconds)
        if removed:
            log.info("pruned %d finished job(s)", removed)
