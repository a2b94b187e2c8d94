"""The job queue in the index, on SQLite and PostgreSQL (index/job_queue.py, docs/jobs.md).

Claiming is one UPDATE of the oldest due row, chosen by a sub-select: on PostgreSQL the
sub-select takes the row with FOR UPDATE SKIP LOCKED, so concurrent claimers each get a
different row and never wait on one another; on SQLite the write transaction is exclusive
already (BEGIN IMMEDIATE, index/db.py), so the same statement runs one claimer at a time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, delete, or_, select, update

from stablemirror.index.db import Database
from stablemirror.index.job_queue import Job, JobState, PeriodicResult
from stablemirror.index.schema_jobs import jobs as j

UNFINISHED = ("queued", "running", "failed")


def _job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(id=m["id"], kind=m["kind"], payload=json.loads(m["payload"]), state=m["state"],
               attempts=m["attempts"], max_attempts=m["max_attempts"], run_at=m["run_at"],
               pinned_to=m["pinned_to"], lease_owner=m["lease_owner"],
               lease_expires=m["lease_expires"], last_error=m["last_error"],
               dedup_key=m["dedup_key"], created_at=m["created_at"],
               updated_at=m["updated_at"])


class SqlJobQueue:
    def __init__(self, db: Database, *, max_attempts: int = 5, backoff_seconds: float = 10.0,
                 backoff_max_seconds: float = 900.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.backoff = backoff_seconds
        self.backoff_max = backoff_max_seconds
        self.jitter = jitter  # in [0, 1): the share of the second half of the delay

    def retry_delay(self, attempts: int) -> float:
        """Exponential in the attempts made, capped; the jitter spreads it over [d/2, d) so
        replicas failing together do not come back together."""
        delay = min(self.backoff_max, self.backoff * 2.0 ** max(0, attempts - 1))
        return float(delay / 2 + self.jitter() * delay / 2)

    def _row(self, kind: str, payload: dict[str, Any] | None, run_at: float | None,
             dedup_key: str | None, max_attempts: int | None, pinned_to: str | None
             ) -> dict[str, Any]:
        now = time.time()
        return {"kind": kind, "payload": json.dumps(payload or {}), "state": "queued",
                "attempts": 0, "max_attempts": max_attempts or self.max_attempts,
                "run_at": now if run_at is None else run_at, "pinned_to": pinned_to,
                "dedup_key": dedup_key, "created_at": now, "updated_at": now}

    def _insert(self, c: Connection, row: dict[str, Any]) -> int | None:
        stmt = self.db.insert(j).values(**row)
        if row["dedup_key"] is not None:
            stmt = stmt.on_conflict_do_nothing(index_elements=[j.c.dedup_key])
        value: int | None = c.execute(stmt.returning(j.c.id)).scalar_one_or_none()
        return value

    async def enqueue(self, kind: str, payload: dict[str, Any] | None = None, *,
                      run_at: float | None = None, dedup_key: str | None = None,
                      max_attempts: int | None = None, pinned_to: str | None = None
                      ) -> int | None:
        row = self._row(kind, payload, run_at, dedup_key, max_attempts, pinned_to)
        return await self.db.write(lambda c: self._insert(c, row))

    async def enqueue_periodic(self, kind: str, dedup_key: str, *, run_at: float,
                               max_attempts: int | None = None, pinned_to: str | None = None
                               ) -> PeriodicResult:
        row = self._row(kind, None, run_at, dedup_key, max_attempts, pinned_to)
        pin = j.c.pinned_to.is_(None) if pinned_to is None else j.c.pinned_to == pinned_to
        unfinished = select(j.c.id).where(j.c.kind == kind, pin,
                                          j.c.state.in_(UNFINISHED)).limit(1)
        taken = select(j.c.id).where(j.c.dedup_key == dedup_key)

        def look(c: Connection) -> PeriodicResult | None:
            if c.execute(taken).first() is not None:
                return "taken"
            return "busy" if c.execute(unfinished).first() is not None else None

        # Every runner asks every poll: a read first (inline on SQLite, no write lock), the
        # write transaction only when the slot looks free.
        if (seen := await self.db.read(look)) is not None:
            return seen

        def tx(c: Connection) -> PeriodicResult:
            if (seen := look(c)) is not None:
                return seen
            return "enqueued" if self._insert(c, row) is not None else "taken"
        return await self.db.write(tx)

    async def claim(self, owner: str, kinds: list[str], lease_seconds: float,
                    replica: str | None = None) -> Job | None:
        if not kinds:
            return None
        pin: ColumnElement[bool] = j.c.pinned_to.is_(None)
        if replica is not None:
            pin = or_(pin, j.c.pinned_to == replica)
        mine = and_(j.c.kind.in_(kinds), pin)

        def due_now(now: float) -> ColumnElement[bool]:
            expired = and_(j.c.state == "running", j.c.lease_expires < now)
            return or_(and_(j.c.state.in_(("queued", "failed")), j.c.run_at <= now), expired)

        # Every worker asks every poll: a read first (inline on SQLite, no write lock), the
        # write transaction only when something is due.
        anything = select(j.c.id).where(mine, due_now(time.time())).limit(1)
        if await self.db.read(lambda c: c.execute(anything).first()) is None:
            return None

        def tx(c: Connection) -> Job | None:
            now = time.time()
            expired = and_(j.c.state == "running", j.c.lease_expires < now)
            # A lease that ran out on the last attempt: the job is dead, not run again.
            last = (select(j.c.id).where(mine, expired, j.c.attempts >= j.c.max_attempts)
                    .with_for_update(skip_locked=True))
            c.execute(update(j).where(j.c.id.in_(last)).values(
                state="dead", lease_expires=None, updated_at=now,
                last_error="lease expired on the last attempt (its runner died or hung)"))
            pick = (select(j.c.id).where(mine, due_now(now), j.c.attempts < j.c.max_attempts)
                    .order_by(j.c.run_at, j.c.id).limit(1)
                    .with_for_update(skip_locked=True).scalar_subquery())
            row = c.execute(update(j).where(j.c.id == pick).values(
                state="running", attempts=j.c.attempts + 1, lease_owner=owner,
                lease_expires=now + lease_seconds, updated_at=now).returning(*j.c)).first()
            return _job(row) if row is not None else None
        return await self.db.write(tx)

    def _owned(self, job_id: int, owner: str) -> Any:
        return and_(j.c.id == job_id, j.c.state == "running", j.c.lease_owner == owner)

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        def tx(c: Connection) -> bool:
            now = time.time()
            return c.execute(update(j).where(self._owned(job_id, owner)).values(
                lease_expires=now + lease_seconds, updated_at=now)).rowcount == 1
        return await self.db.write(tx)

    async def complete(self, job_id: int, owner: str) -> bool:
        def tx(c: Connection) -> bool:
            return c.execute(update(j).where(self._owned(job_id, owner)).values(
                state="done", lease_expires=None, updated_at=time.time())).rowcount == 1
        return await self.db.write(tx)

    async def fail(self, job_id: int, owner: str, error: str) -> JobState | None:
        def tx(c: Connection) -> JobState | None:
            row = c.execute(select(j.c.attempts, j.c.max_attempts)
                            .where(self._owned(job_id, owner))).first()
            if row is None:
                return None
            now = time.time()
            state: JobState = "dead" if row.attempts >= row.max_attempts else "failed"
            c.execute(update(j).where(j.c.id == job_id).values(
                state=state, lease_expires=None, last_error=error[:4000], updated_at=now,
                run_at=now + self.retry_delay(row.attempts) if state == "failed" else now))
            return state
        return await self.db.write(tx)

    async def release(self, job_id: int, owner: str) -> bool:
        def tx(c: Connection) -> bool:
            now = time.time()
            return c.execute(update(j).where(self._owned(job_id, owner)).values(
                state="queued", attempts=j.c.attempts - 1, lease_owner=None,
                lease_expires=None, run_at=now, updated_at=now)).rowcount == 1
        return await self.db.write(tx)

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.read(lambda c: c.execute(select(j).where(j.c.id == job_id)).first())
        return _job(row) if row is not None else None

    async def list(self, state: JobState | None = None, kind: str | None = None,
                   limit: int = 100) -> list[Job]:
        query = select(j).order_by(j.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(j.c.state == state)
        if kind is not None:
            query = query.where(j.c.kind == kind)
        rows = await self.db.read(lambda c: c.execute(query).all())
        return [_job(r) for r in rows]

    async def prune(self, done_before: float, dead_before: float) -> int:
        def tx(c: Connection) -> int:
            return c.execute(delete(j).where(or_(
                and_(j.c.state == "done", j.c.updated_at < done_before),
                and_(j.c.state == "dead", j.c.updated_at < dead_before)))).rowcount
        return await self.db.write(tx)
