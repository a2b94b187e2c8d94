"""PostgreSQL connections per process are bounded (index/db.py, index/pg_reads.py): a
request that cannot get one in time is a clean 503 UNAVAILABLE, not a hang, on both the
engine path and the pull path's event-loop reads; after a restart both reconnect."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, literal_column, select, text

from stablemirror.index.db import Database, PoolSize
from stablemirror.oci.errors import Unavailable
from tests.contract.conftest import PostgresServer


@pytest.fixture
def url(postgres: PostgresServer, postgres_migrated_template: str) -> str:
    return postgres.url(postgres.create_database(template=postgres_migrated_template))


async def test_a_busy_pool_answers_unavailable_within_its_timeout(url: str) -> None:
    db = Database(url, PoolSize(size=2, max_overflow=0, timeout=0.3))
    try:
        held = db.writer.connect()  # the engine's only connection (the other is hot reads)
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await db.write(lambda c: c.execute(text("SELECT 1")).scalar())
        assert time.monotonic() - started < 5
        assert caught.value.detail["reason"] == "index"
        assert caught.value.headers["Retry-After"] == "1"
        held.close()
        assert await db.write(lambda c: c.execute(text("SELECT 1")).scalar()) == 1
    finally:
        await db.close()


async def test_busy_event_loop_reads_answer_unavailable_within_their_timeout(url: str
                                                                              ) -> None:
    db = Database(url, PoolSize(size=2, max_overflow=0, timeout=0.3))
    try:
        slow = select(func.pg_sleep(literal_column("1.0")))
        first = asyncio.create_task(db.read_row(slow))
        await asyncio.sleep(0.1)
        with pytest.raises(Unavailable):
            await db.read_row(select(func.now()))
        await first
        assert await db.read_row(select(func.now())) is not None
    finally:
        await db.close()


async def test_both_paths_reconnect_after_a_restart() -> None:
    own = PostgresServer()  # not the session's server: it restarts
    own.start()
    db = Database(own.url(own.create_database()), PoolSize(size=2, max_overflow=0, timeout=5))
    try:
        query = select(func.now())
        assert await db.read_row(query) is not None
        assert await db.read(lambda c: c.execute(query).scalar()) is not None
        own.restart()
        # Idle connections from before the restart: each path retries once on a fresh one.
        assert await db.read_row(query) is not None
        assert await db.read(lambda c: c.execute(query).scalar()) is not None
    finally:
        await db.close()
        own.stop()
