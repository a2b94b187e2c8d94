"""The notification outbox contract (index/sql_notifications.py): SQLite and PostgreSQL
behave the same. Order per endpoint, one sender at a time under the lease, backoff, takeover
of an expired lease (the batch is sent again: at least once), the cap dropping the oldest,
and a race of senders with their own connections delivering every row once, in order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.db import Database
from stablemirror.index.sql_notifications import OutboxRow, SqlOutbox
from tests.contract.test_index import BACKENDS, _url

CAPS = {"a": 1000, "b": 1000}


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, request, tmp_path)


@pytest.fixture
async def outbox(url: str) -> AsyncIterator[SqlOutbox]:
    db = Database(url)
    box = SqlOutbox(db)
    await box.ensure_endpoints(["a", "b"])
    await box.ensure_endpoints(["a", "b"])  # every worker does this at start: idempotent
    yield box
    await db.close()


def rows(endpoint: str, *ids: str) -> list[OutboxRow]:
    return [OutboxRow(endpoint, i, f'{{"id":"{i}"}}') for i in ids]


async def test_one_sender_at_a_time_in_order_per_endpoint(outbox: SqlOutbox) -> None:
    await outbox.enqueue(rows("a", "e1", "e2", "e3") + rows("b", "f1"), CAPS)
    first = await outbox.claim("a", "w1", 30, limit=2)
    assert [d.event_id for d in first] == ["e1", "e2"]
    assert await outbox.claim("a", "w2", 30, limit=2) == []  # w1 holds a
    assert [d.event_id for d in await outbox.claim("b", "w2", 30, 10)] == ["f1"]  # b is apart
    assert await outbox.delivered("a", "w1", [d.id for d in first]) == 2
    # w1 still has work: it keeps the lease and sends the rest
    assert await outbox.claim("a", "w2", 30, 10) == []
    rest = await outbox.claim("a", "w1", 30, 10)
    assert [d.event_id for d in rest] == ["e3"]
    await outbox.delivered("a", "w1", [d.id for d in rest])
    # nothing left: the lease is free, the next event goes to whoever asks first
    await outbox.enqueue(rows("a", "e4"), CAPS)
    assert [d.event_id for d in await outbox.claim("a", "w2", 30, 10)] == ["e4"]


async def test_a_failure_backs_off_and_keeps_the_order(outbox: SqlOutbox) -> None:
    await outbox.enqueue(rows("a", "e1", "e2"), CAPS)
    batch = await outbox.claim("a", "w1", 30, limit=1)
    wait = await outbox.failed("a", "w1", [d.id for d in batch], "HTTP 503", lambda n: 0.3 * n)
    assert wait == pytest.approx(0.3)
    # not due: no sender may skip ahead to e2 either
    assert await outbox.claim("a", "w2", 30, 10) == []
    state = (await outbox.states(["a"]))[0]
    assert (state.pending, state.attempts, state.last_error) == (2, 1, "HTTP 503")
    await asyncio.sleep(0.35)
    again = await outbox.claim("a", "w2", 30, 10)  # the lease was let go with the failure
    assert [(d.event_id, d.attempts) for d in again] == [("e1", 1), ("e2", 0)]


async def test_an_expired_lease_is_taken_over_and_the_batch_sent_again(
        outbox: SqlOutbox) -> None:
    await outbox.enqueue(rows("a", "e1"), CAPS)
    assert [d.event_id for d in await outbox.claim("a", "dead", 0.2, 10)] == ["e1"]
    assert await outbox.claim("a", "w2", 30, 10) == []
    await asyncio.sleep(0.25)
    assert [d.event_id for d in await outbox.claim("a", "w2", 30, 10)] == ["e1"]


async def test_the_cap_drops_the_oldest(outbox: SqlOutbox) -> None:
    dropped = await outbox.enqueue(rows("a", *[f"e{n}" for n in range(5)]), {"a": 3})
    assert dropped == {"a": 2}
    assert await outbox.enqueue(rows("a", "e5"), {"a": 3}) == {"a": 1}
    batch = await outbox.claim("a", "w1", 30, 10)
    assert [d.event_id for d in batch] == ["e3", "e4", "e5"]
    state = (await outbox.states(["a", "b"]))
    assert [(s.endpoint, s.pending) for s in state] == [("a", 3), ("b", 0)]
    assert state[0].lease_owner == "w1" and state[1].oldest_created_at is None


def _sender(url: str, owner: str, sent: list[tuple[str, str]], deadline: float) -> None:
    async def run() -> None:
        db = Database(url)
        box = SqlOutbox(db)
        try:
            while time.monotonic() < deadline:
                batch = await box.claim("a", owner, 30, 3)
                if batch:
                    sent.extend((d.event_id, owner) for d in batch)
                    await box.delivered("a", owner, [d.id for d in batch])
                elif not (await box.states(["a"]))[0].pending:
                    return
        finally:
            await db.close()
    asyncio.run(run())


async def test_racing_senders_deliver_every_event_once_in_order(
        url: str, outbox: SqlOutbox) -> None:
    ids = [f"e{n:03d}" for n in range(60)]
    await outbox.enqueue(rows("a", *ids), CAPS)
    sent: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    threads = [threading.Thread(target=_sender, args=(url, f"w{w}", sent, deadline))
               for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(35)
    assert [event for event, _owner in sent] == ids
