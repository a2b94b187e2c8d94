"""The job queue contract (index/job_queue.py): SQLite and PostgreSQL behave the same.

Dedup, exactly-once claims under a race of many claimers with their own connections,
takeover of an expired lease, heartbeats by a non-owner refused, backoff, dead after the
last attempt, pinned jobs, release and pruning."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.db import Database
from stablemirror.index.lite_db import LiteDatabase
from stablemirror.index.lite_jobs import LiteJobQueue
from stablemirror.index.migrate import upgrade
from stablemirror.index.sql_jobs import SqlJobQueue
from tests.contract.conftest import PostgresServer
from tests.contract.test_index import NODE_BACKENDS, _url, open_db

AnyQueue = SqlJobQueue | LiteJobQueue


def queue_of(db: Database | LiteDatabase, backoff_seconds: float = 10.0,
             backoff_max_seconds: float = 900.0) -> AnyQueue:
    """The job queue of `db`'s backend."""
    if isinstance(db, LiteDatabase):
        return LiteJobQueue(db, backoff_seconds=backoff_seconds,
                            backoff_max_seconds=backoff_max_seconds)
    return SqlJobQueue(db, backoff_seconds=backoff_seconds,
                       backoff_max_seconds=backoff_max_seconds)


@pytest.fixture(params=NODE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(backend, request, tmp_path)


@pytest.fixture
async def queue(backend: str, url: str) -> AsyncIterator[AnyQueue]:
    db = open_db(backend, url)
    yield queue_of(db, backoff_seconds=0.2, backoff_max_seconds=1.0)
    await db.close()


async def test_a_dedup_key_is_inserted_once(queue: AnyQueue) -> None:
    first = await queue.enqueue("gc", {"n": 1}, dedup_key="gc/slot/1")
    assert first is not None
    assert await queue.enqueue("gc", {"n": 2}, dedup_key="gc/slot/1") is None
    assert await queue.enqueue("gc", {"n": 3}) is not None  # no key: no dedup
    job = await queue.get(first)
    assert job is not None and job.payload == {"n": 1} and job.state == "queued"
    assert [j.kind for j in await queue.list()] == ["gc", "gc"]


async def test_a_periodic_slot_is_taken_once_and_runs_never_overlap(queue: AnyQueue
                                                                    ) -> None:
    now = time.time()
    assert await queue.enqueue_periodic("scrub", "scrub/1", run_at=now) == "enqueued"
    assert await queue.enqueue_periodic("scrub", "scrub/1", run_at=now) == "taken"
    # The next slot waits while the first is unfinished, then goes in.
    assert await queue.enqueue_periodic("scrub", "scrub/2", run_at=now) == "busy"
    job = await queue.claim("a", ["scrub"], 30)
    assert job is not None
    assert await queue.enqueue_periodic("scrub", "scrub/2", run_at=now) == "busy"
    assert await queue.complete(job.id, "a")
    assert await queue.enqueue_periodic("scrub", "scrub/2", run_at=now) == "enqueued"
    # Per-host slots of one kind do not hold each other up.
    assert await queue.enqueue_periodic("evict", "evict@h1/1", run_at=now,
                                        pinned_to="h1") == "enqueued"
    assert await queue.enqueue_periodic("evict", "evict@h2/1", run_at=now,
                                        pinned_to="h2") == "enqueued"


async def test_claims_take_due_jobs_of_known_kinds_oldest_first(queue: AnyQueue) -> None:
    now = time.time()
    later = await queue.enqueue("gc", run_at=now + 3600)
    second = await queue.enqueue("gc", run_at=now - 1)
    first = await queue.enqueue("gc", run_at=now - 2)
    await queue.enqueue("other", run_at=now - 3)
    assert (await queue.claim("a", ["nothing"], 30)) is None
    got = [await queue.claim("a", ["gc"], 30) for _ in range(3)]
    assert [j.id if j else None for j in got] == [first, second, None]
    assert got[0] is not None and got[0].state == "running" and got[0].attempts == 1
    assert got[0].lease_owner == "a" and got[0].lease_expires is not None
    assert later is not None and (await queue.get(later)).state == "queued"  # type: ignore[union-attr]


async def test_a_pinned_job_goes_only_to_its_replica(queue: AnyQueue) -> None:
    pinned = await queue.enqueue("evict", pinned_to="host-b")
    assert await queue.claim("host-a:1", ["evict"], 30, replica="host-a") is None
    assert await queue.claim("any:1", ["evict"], 30) is None
    job = await queue.claim("host-b:1", ["evict"], 30, replica="host-b")
    assert job is not None and job.id == pinned


def _claim_loop(backend: str, url: str, worker: int, claimed: list[tuple[int, int]],
                deadline: float) -> None:
    """One claimer with its own connection pool, as another process would have."""
    async def run() -> None:
        db = open_db(backend, url)
        queue = queue_of(db)
        try:
            idle = 0
            while time.monotonic() < deadline and idle < 5:
                job = await queue.claim(f"w{worker}", ["race"], 30)
                if job is None:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                claimed.append((job.id, worker))
                assert await queue.complete(job.id, f"w{worker}")
        finally:
            await db.close()
    asyncio.run(run())


async def test_each_job_is_claimed_exactly_once_under_a_race(backend: str, url: str,
                                                             queue: AnyQueue) -> None:
    ids = [i for n in range(80) if (i := await queue.enqueue("race", {"n": n})) is not None]
    claimed: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    threads = [threading.Thread(target=_claim_loop, args=(backend, url, w, claimed, deadline))
               for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    counts = Counter(job_id for job_id, _w in claimed)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}
    assert len({w for _id, w in claimed}) > 1  # they really raced
    assert {j.state for j in await queue.list(limit=200)} == {"done"}


async def test_an_expired_lease_is_taken_over_and_the_old_owner_refused(
        queue: AnyQueue) -> None:
    job_id = await queue.enqueue("slow")
    first = await queue.claim("a", ["slow"], 0.3)
    assert first is not None and first.id == job_id
    assert await queue.claim("b", ["slow"], 30) is None  # leased
    assert not await queue.heartbeat(first.id, "b", 30)  # a non-owner cannot extend it
    assert await queue.heartbeat(first.id, "a", 0.3)
    await asyncio.sleep(0.5)
    second = await queue.claim("b", ["slow"], 30)
    assert second is not None and second.id == job_id
    assert second.lease_owner == "b" and second.attempts == 2
    assert not await queue.heartbeat(job_id, "a", 30)  # the old owner lost it
    assert not await queue.complete(job_id, "a")
    assert await queue.fail(job_id, "a", "late") is None
    assert await queue.complete(job_id, "b")
    done = await queue.get(job_id)
    assert done is not None and done.state == "done" and done.lease_owner == "b"


async def test_failures_back_off_then_the_job_is_dead(queue: AnyQueue) -> None:
    job_id = await queue.enqueue("flaky", max_attempts=3)
    assert job_id is not None
    delays = []
    for attempt in (1, 2):
        job = await queue.claim("a", ["flaky"], 30)
        assert job is not None and job.attempts == attempt
        before = time.time()
        assert await queue.fail(job_id, "a", f"boom {attempt}") == "failed"
        failed = await queue.get(job_id)
        assert failed is not None and failed.state == "failed"
        assert failed.last_error == f"boom {attempt}"
        delays.append(failed.run_at - before)
        assert await queue.claim("a", ["flaky"], 30) is None  # not before its backoff
        await asyncio.sleep(failed.run_at - time.time() + 0.05)
    # base 0.2 s, doubled per attempt, jittered over [d/2, d)
    assert 0.1 - 0.02 <= delays[0] <= 0.2 + 0.02
    assert 0.2 - 0.02 <= delays[1] <= 0.4 + 0.02
    job = await queue.claim("a", ["flaky"], 30)
    assert job is not None and job.attempts == 3
    assert await queue.fail(job_id, "a", "boom 3") == "dead"
    assert await queue.claim("a", ["flaky"], 30) is None
    dead = await queue.get(job_id)
    assert dead is not None and dead.state == "dead" and dead.last_error == "boom 3"


async def test_a_lease_lost_on_the_last_attempt_makes_the_job_dead(queue: AnyQueue
                                                                   ) -> None:
    job_id = await queue.enqueue("crashy", max_attempts=1)
    assert await queue.claim("a", ["crashy"], 0.1) is not None
    await asyncio.sleep(0.3)
    assert await queue.claim("b", ["crashy"], 30) is None
    dead = await queue.get(job_id)  # type: ignore[arg-type]
    assert dead is not None and dead.state == "dead" and "lease expired" in str(dead.last_error)


async def test_release_gives_the_job_back_without_costing_an_attempt(queue: AnyQueue
                                                                     ) -> None:
    job_id = await queue.enqueue("gc", max_attempts=1)
    job = await queue.claim("a", ["gc"], 30)
    assert job is not None
    assert not await queue.release(job.id, "b")
    assert await queue.release(job.id, "a")
    again = await queue.claim("b", ["gc"], 30)
    assert again is not None and again.id == job_id and again.attempts == 1


async def test_prune_drops_old_done_and_dead_jobs_only(queue: AnyQueue) -> None:
    done_id = await queue.enqueue("gc")
    job = await queue.claim("a", ["gc"], 30)
    assert job is not None and await queue.complete(job.id, "a")
    queued_id = await queue.enqueue("gc", run_at=time.time() + 3600)
    assert await queue.prune(time.time() - 60, time.time() - 60) == 0  # too recent
    assert await queue.prune(time.time() + 1, time.time() + 1) == 1
    assert await queue.get(done_id) is None  # type: ignore[arg-type]
    assert await queue.get(queued_id) is not None  # type: ignore[arg-type]


def test_replicas_starting_together_migrate_one_at_a_time(postgres: PostgresServer) -> None:
    """Every `serve` migrates the index at start-up; several replicas start at once on one
    fresh PostgreSQL database, and every one of them must come up."""
    url = postgres.url(postgres.create_database())
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(url)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a migration hung"
    assert errors == []
    assert postgres.scalar("SELECT version_num FROM alembic_version",
                           url.rsplit("/", 1)[1]) is not None
