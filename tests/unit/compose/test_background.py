"""One lifecycle for every background loop (compose/background.py)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from stablemirror.compose.background import Background


async def test_loops_start_after_the_other_start_hooks_and_stop_first_at_shutdown() -> None:
    order: list[str] = []
    app = web.Application()
    background = Background()

    async def loop() -> None:
        order.append("loop started")
        try:
            await asyncio.Event().wait()
        finally:
            order.append("loop stopped")

    async def opened(_app: web.Application) -> None:
        order.append("client opened")

    async def closing(_app: web.Application) -> None:
        order.append("shutdown hook")

    background.run("loop", loop)
    app.on_shutdown.append(closing)
    background.install(app)
    app.on_startup.insert(0, opened)
    app.freeze()
    await app.startup()
    await asyncio.sleep(0.01)
    await app.shutdown()
    assert order == ["client opened", "loop started", "loop stopped", "shutdown hook"]


async def test_a_failing_job_runs_again_and_first_now_decides_the_first_run() -> None:
    runs: dict[str, int] = {"now": 0, "later": 0}
    third = asyncio.Event()

    async def failing() -> None:
        runs["now"] += 1
        if runs["now"] == 3:
            third.set()
        raise RuntimeError("boom")

    async def later() -> None:
        runs["later"] += 1

    app = web.Application()
    background = Background()
    background.every("now", 0.01, failing)
    background.every("later", 10, later, first_now=False)
    background.install(app)
    app.freeze()
    await app.startup()
    await asyncio.wait_for(third.wait(), 5)
    await app.shutdown()
    assert runs["now"] >= 3  # a failure is logged, not the end of the job
    assert runs["later"] == 0  # its first run is one interval away


def test_jobs_need_a_runner_and_run_as_one_more_loop() -> None:
    from stablemirror.jobs.config import JobSettings
    from stablemirror.jobs.runner import JobContext, JobRunner

    async def handler(_ctx: JobContext) -> None:
        return None

    try:
        Background().job("gc", 60, handler)
    except RuntimeError as e:
        assert "runner" in str(e)
    else:
        raise AssertionError("a job without a runner was accepted")
    runner = JobRunner(queue=None, settings=JobSettings(), replica="r")  # type: ignore[arg-type]
    background = Background(runner)
    background.job("gc", 60, handler, per_host=True)
    assert "gc" in runner.kinds
