"""The job queue (index/job_queue.py) on sqlite3: index/sql_jobs.py's statements as SQLite
runs them, for the stdlib-sqlite3 backend (index/lite_db.py). A claim is one UPDATE of the
oldest due row inside a BEGIN IMMEDIATE transaction, which holds SQLite's one writer lock,
so concurrent claimers (threads or processes) take turns and each job goes to one of them."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from stablemirror.index.job_queue import Job, JobState, PeriodicResult
from stablemirror.index.lite_db import LiteDatabase

COLUMNS = ("id, kind, payload, state, attempts, max_attempts, run_at, pinned_to, "
           "lease_owner, lease_expires, last_error, dedup_key, created_at, updated_at")
UNFINISHED = "state IN ('queued', 'running', 'failed')"
OWNED = "id = ? AND state = 'running' AND lease_owner = ?"


def _job(row: tuple[Any, ...]) -> Job:
    (id_, kind, payload, state, attempts, max_attempts, run_at, pinned_to, lease_owner,
     lease_expires, last_error, dedup_key, created_at, updated_at) = row
    return Job(id=id_, kind=kind, payload=json.loads(payload), state=state, attempts=attempts,
               max_attempts=max_attempts, run_at=run_at, pinned_to=pinned_to,
               lease_owner=lease_owner, lease_expires=lease_expires, last_error=last_error,
               dedup_key=dedup_key, created_at=created_at, updated_at=updated_at)


class LiteJobQueue:
    def __init__(self, db: LiteDatabase, *, max_attempts: int = 5,
                 backoff_seconds: float = 10.0, backoff_max_seconds: float = 900.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.backoff = backoff_seconds
        self.backoff_max = backoff_max_seconds
        self.jitter = jitter  # in [0, 1): the share of the second half of the delay

    def retry_delay(self, attempts: int) -> float:
        """As index/sql_jobs.py: exponential, capped, spread over [d/2, d)."""
        delay = min(self.backoff_max, self.backoff * 2.0 ** max(0, attempts - 1))
        return float(delay / 2 + self.jitter() * delay / 2)

    def _insert(self, c: sqlite3.Connection, kind: str, payload: dict[str, Any] | None,
                run_at: float | None, dedup_key: str | None, max_attempts: int | None,
                pinned_to: str | None) -> int | None:
        now = time.time()
        conflict = " ON CONFLICT (dedup_key) DO NOTHING" if dedup_key is not None else ""
        row = c.execute(
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, "
            "pinned_to, dedup_key, created_at, updated_at) "
            f"VALUES (?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?){conflict} RETURNING id",
            (kind, json.dumps(payload or {}), max_attempts or self.max_attempts,
             now if run_at is None else run_at, pinned_to, dedup_key, now, now)).fetchone()
        return None if row is None else int(row[0])

    async def enqueue(self, kind: str, payload: dict[str, Any] | None = None, *,
                      run_at: float | None = None, dedup_key: str | None = None,
                      max_attempts: int | None = None, pinned_to: str | None = None
                      ) -> int | None:
        return await self.db.write(lambda c: self._insert(
            c, kind, payload, run_at, dedup_key, max_attempts, pinned_to))

    async def enqueue_periodic(self, kind: str, dedup_key: str, *, run_at: float,
                               max_attempts: int | None = None, pinned_to: str | None = None
                               ) -> PeriodicResult:
        pin = "pinned_to IS NULL" if pinned_to is None else "pinned_to = ?"
        pin_args: tuple[str, ...] = () if pinned_to is None else (pinned_to,)

        def look(c: sqlite3.Connection) -> PeriodicResult | None:
            if c.execute("SELECT id FROM jobs WHERE dedup_key = ?", (dedup_key,)).fetchone():
                return "taken"
            busy = c.execute(f"SELECT id FROM jobs WHERE kind = ? AND {pin} AND {UNFINISHED} "
                             "LIMIT 1", (kind, *pin_args)).fetchone()
            return "busy" if busy is not None else None

        # Every runner asks every poll: a read first (no write lock), the write
        # transaction only when the slot looks free.
        if (seen := await self.db.read(look)) is not None:
            return seen

        def tx(c: sqlite3.Connection) -> PeriodicResult:
            if (seen := look(c)) is not None:
                return seen
            inserted = self._insert(c, kind, None, run_at, dedup_key, max_attempts, pinned_to)
            return "enqueued" if inserted is not None else "taken"
        return await self.db.write(tx)

    async def claim(self, owner: str, kinds: list[str], lease_seconds: float,
                    replica: str | None = None) -> Job | None:
        if not kinds:
            return None
        mine = f"kind IN ({', '.join('?' * len(kinds))}) AND (pinned_to IS NULL"
        mine_args: list[object] = list(kinds)
        if replica is not None:
            mine += " OR pinned_to = ?"
            mine_args.append(replica)
        mine += ")"
        expired = "(state = 'running' AND lease_expires < ?)"
        due = f"((state IN ('queued', 'failed') AND run_at <= ?) OR {expired})"

        # Every worker asks every poll: a read first (no write lock), the write
        # transaction only when something is due.
        probe = time.time()
        anything = await self.db.read(lambda c: c.execute(
            f"SELECT id FROM jobs WHERE {mine} AND {due} LIMIT 1",
            (*mine_args, probe, probe)).fetchone())
        if anything is None:
            return None

        def tx(c: sqlite3.Connection) -> Job | None:
            now = time.time()
            # A lease that ran out on the last attempt: the job is dead, not run again.
            c.execute("UPDATE jobs SET state = 'dead', lease_expires = NULL, updated_at = ?, "
                      "last_error = 'lease expired on the last attempt (its runner died or "
                      f"hung)' WHERE id IN (SELECT id FROM jobs WHERE {mine} AND {expired} "
                      "AND attempts >= max_attempts)", (now, *mine_args, now))
            row = c.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?, "
                "lease_expires = ?, updated_at = ? WHERE id = (SELECT id FROM jobs WHERE "
                f"{mine} AND {due} AND attempts < max_attempts ORDER BY run_at, id LIMIT 1) "
                f"RETURNING {COLUMNS}",
                (owner, now + lease_seconds, now, *mine_args, now, now)).fetchone()
            return None if row is None else _job(row)
        return await self.db.write(tx)

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            now = time.time()
            return c.execute(f"UPDATE jobs SET lease_expires = ?, updated_at = ? WHERE {OWNED}",
                             (now + lease_seconds, now, job_id, owner)).rowcount == 1
        return await self.db.write(tx)

    async def complete(self, job_id: int, owner: str) -> bool:
        return await self.db.write(lambda c: c.execute(
            f"UPDATE jobs SET state = 'done', lease_expires = NULL, updated_at = ? WHERE {OWNED}",
            (time.time(), job_id, owner)).rowcount == 1)

    async def fail(self, job_id: int, owner: str, error: str) -> JobState | None:
        def tx(c: sqlite3.Connection) -> JobState | None:
            row = c.execute(f"SELECT attempts, max_attempts FROM jobs WHERE {OWNED}",
                            (job_id, owner)).fetchone()
            if row is None:
                return None
            now = time.time()
            attempts, max_attempts = row
            state: JobState = "dead" if attempts >= max_attempts else "failed"
            run_at = now + self.retry_delay(attempts) if state == "failed" else now
            c.execute("UPDATE jobs SET state = ?, lease_expires = NULL, last_error = ?, "
                      "updated_at = ?, run_at = ? WHERE id = ?",
                      (state, error[:4000], now, run_at, job_id))
            return state
        return await self.db.write(tx)

    async def release(self, job_id: int, owner: str) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            now = time.time()
            return c.execute(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, "
                f"lease_expires = NULL, run_at = ?, updated_at = ? WHERE {OWNED}",
                (now, now, job_id, owner)).rowcount == 1
        return await self.db.write(tx)

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.read(lambda c: c.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return None if row is None else _job(row)

    async def list(self, state: JobState | None = None, kind: str | None = None,
                   limit: int = 100) -> list[Job]:
        sql = f"SELECT {COLUMNS} FROM jobs WHERE 1 = 1"
        params: list[object] = []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self.db.read(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [_job(r) for r in rows]

    async def prune(self, done_before: float, dead_before: float) -> int:
        return await self.db.write(lambda c: c.execute(
            "DELETE FROM jobs WHERE (state = 'done' AND updated_at < ?) "
            "OR (state = 'dead' AND updated_at < ?)", (done_before, dead_before)).rowcount)
