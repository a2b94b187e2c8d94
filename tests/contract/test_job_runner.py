"""JobRunner over the queue on SQLite and PostgreSQL: a periodic job runs once per period
across several runners (as many replicas would), a failing handler is retried, a handler
whose lease is taken over is cancelled, and shutdown hands a running job back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stablemirror.index.db import Database
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.jobs.config import JobSettings
from stablemirror.jobs.runner import JobContext, JobRunner
from tests.contract.test_index import NODE_BACKENDS, _url, open_db
from tests.contract.test_job_queue import queue_of

AnyDatabase = Database | LiteDatabase
FAST = JobSettings(lease_seconds=0.6, poll_seconds=0.05, backoff_seconds=0.1)


@pytest.fixture(params=NODE_BACKENDS)
async def dbs(request: pytest.FixtureRequest, tmp_path: Path
              ) -> AsyncIterator[list[AnyDatabase]]:
    """Three replicas' databases: each its own engine and connections."""
    url = _url(request.param, request, tmp_path)
    databases = [open_db(request.param, url) for _ in range(3)]
    yield databases
    for db in databases:
        await db.close()


async def _run_for(runners: list[JobRunner], seconds: float) -> None:
    tasks = [asyncio.create_task(r.run()) for r in runners]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_periodic_job_runs_once_per_period_across_runners(dbs: list[AnyDatabase]
                                                                   ) -> None:
    runs: list[tuple[str, int]] = []
    every = 0.4

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def run(ctx: JobContext) -> None:
            runs.append((name, ctx.job.id))
            await asyncio.sleep(0.05)
        return run

    runners = []
    for i, db in enumerate(dbs):
        runner = JobRunner(queue_of(db), FAST, replica=f"r{i}")
        runner.every("tick", every, handler(f"r{i}"))
        runners.append(runner)
    started = time.time()
    await _run_for(runners, 3.0)
    slots = int(time.time() // every) - int(started // every) + 1  # periods touched
    per_job = Counter(job_id for _name, job_id in runs)
    assert set(per_job.values()) == {1}  # no slot ran twice
    assert slots - 1 <= len(runs) <= slots  # one run per period (the last may be pending)
    assert len({name for name, _id in runs}) > 1  # the runners shared the work
    rows = await queue_of(dbs[0]).list(kind="tick", limit=100)
    assert "running" not in {r.state for r in rows}  # shutdown released what it held
    done = {r.id for r in rows if r.state == "done"}
    assert done <= set(per_job) and len(done) >= len(runs) - 3  # (3 cut short by the stop)
    assert {r.attempts for r in rows if r.state == "done"} == {1}
    assert len({r.dedup_key for r in rows}) == len(rows)


async def test_per_host_jobs_run_once_per_replica_per_period(dbs: list[AnyDatabase]) -> None:
    runs: list[tuple[str, str | None]] = []
    runners = []
    for i, db in enumerate(dbs[:2]):
        runner = JobRunner(queue_of(db), FAST, replica=f"host{i}")

        async def run(ctx: JobContext, name: str = f"host{i}") -> None:
            runs.append((name, ctx.job.pinned_to))
        runner.every("evict", 60, run, per_host=True)
        runners.append(runner)
    await _run_for(runners, 1.0)
    assert sorted(runs) == [("host0", "host0"), ("host1", "host1")]


async def test_a_failing_handler_is_retried_then_dead(dbs: list[AnyDatabase]) -> None:
    queue = queue_of(dbs[0], backoff_seconds=0.1, backoff_max_seconds=0.2)
    runner = JobRunner(queue, FAST, replica="r0")
    attempts: list[int] = []

    async def flaky(ctx: JobContext) -> None:
        attempts.append(ctx.job.attempts)
        raise RuntimeError(f"boom {ctx.job.attempts}")

    runner.handle("flaky", flaky)
    job_id = await queue.enqueue("flaky", max_attempts=3)
    await _run_for([runner], 2.0)
    assert attempts == [1, 2, 3]
    job = await queue.get(job_id)  # type: ignore[arg-type]
    assert job is not None and job.state == "dead" and job.last_error == "RuntimeError: boom 3"


async def test_a_stalled_runner_loses_its_job_to_another(dbs: list[AnyDatabase]) -> None:
    """Runner a's heartbeats cannot reach the index (as if partitioned): its lease runs out,
    b takes the job over and finishes it, and a's handler is cancelled."""
    queue_a, queue_b = queue_of(dbs[0]), queue_of(dbs[1])
    cancelled, finished = asyncio.Event(), asyncio.Event()
    finished_by: list[str] = []

    async def never(*_a: object) -> bool:
        raise ConnectionError("index unreachable")

    queue_a.heartbeat = never  # type: ignore[method-assign,assignment]
    claim = queue_a.claim
    took: list[int] = []

    async def until_it_took_the_job(*args: Any, **kwargs: Any) -> Any:
        if took:
            return None  # a stalled runner claims nothing more
        job = await claim(*args, **kwargs)
        if job is not None and job.kind == "slow":
            took.append(job.id)
        return job

    queue_a.claim = until_it_took_the_job  # type: ignore[method-assign]
    a = JobRunner(queue_a, FAST, replica="a")
    b = JobRunner(queue_b, FAST, replica="b")

    async def slow_a(_ctx: JobContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def quick_b(_ctx: JobContext) -> None:
        finished_by.append("b")
        finished.set()

    a.handle("slow", slow_a)
    b.handle("slow", quick_b)
    job_id = await queue_a.enqueue("slow")
    task_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)  # a claims it first
    job = await queue_a.get(job_id)  # type: ignore[arg-type]
    assert job is not None and job.lease_owner == a.owner
    task_b = asyncio.create_task(b.run())
    await asyncio.wait_for(cancelled.wait(), 10)
    await asyncio.wait_for(finished.wait(), 10)
    await asyncio.sleep(0.2)  # b records the outcome
    for t in (task_a, task_b):
        t.cancel()
    await asyncio.gather(task_a, task_b, return_exceptions=True)
    done = await queue_b.get(job_id)  # type: ignore[arg-type]
    assert finished_by == ["b"]
    assert done is not None and done.state == "done" and done.lease_owner == b.owner
    assert done.attempts == 2


async def test_shutdown_releases_a_running_job(dbs: list[AnyDatabase]) -> None:
    queue = queue_of(dbs[0])
    runner = JobRunner(queue, FAST, replica="r0")
    started = asyncio.Event()

    async def slow(_ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    runner.handle("slow", slow)
    job_id = await queue.enqueue("slow")
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    job = await queue.get(job_id)  # type: ignore[arg-type]
    assert job is not None and job.state == "queued" and job.attempts == 0
