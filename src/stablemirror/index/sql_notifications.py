"""The notification outbox in the index, on SQLite and PostgreSQL (docs/notifications.md).

A row per (event, endpoint) to deliver; delivered rows are deleted. An endpoint's rows are
sent by whoever holds its lease (`notification_leases`: an owner and an expiry), oldest
first, so each endpoint sees events in the order they were published, each sent once in
the normal case. A holder that dies loses the lease when it expires; the next holder sends
what was not confirmed again (at least once: receivers dedupe by event id).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, delete, func, or_, select, update

from stablemirror.index.db import Database
from stablemirror.index.schema_notifications import notification_deliveries as d
from stablemirror.index.schema_notifications import notification_leases as lease


@dataclass(frozen=True, slots=True)
class OutboxRow:
    endpoint: str
    event_id: str
    body: str  # the event's JSON record


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_id: str
    body: str
    attempts: int  # failed attempts so far
    created_at: float


@dataclass(frozen=True, slots=True)
class EndpointState:
    endpoint: str
    pending: int
    oldest_created_at: float | None
    attempts: int  # failed attempts of the oldest pending event
    next_at: float | None
    last_error: str | None
    lease_owner: str | None
    lease_expires: float | None


class SqlOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure_endpoints(self, names: Sequence[str]) -> None:
        """A lease row per endpoint, so taking a lease is always one conditional UPDATE."""
        if not names:
            return

        def tx(c: Connection) -> None:
            for name in names:
                c.execute(self.db.insert(lease).values(endpoint=name)
                          .on_conflict_do_nothing(index_elements=[lease.c.endpoint]))
        await self.db.write(tx)

    async def enqueue(self, rows: Sequence[OutboxRow], caps: dict[str, int]
                      ) -> dict[str, int]:
        """Insert `rows` in one transaction; an endpoint holding more than its cap loses its
        oldest rows. Returns the rows dropped per endpoint (only those that dropped)."""
        if not rows:
            return {}
        now = time.time()

        def tx(c: Connection) -> dict[str, int]:
            c.execute(d.insert(), [{"endpoint": r.endpoint, "event_id": r.event_id,
                                    "body": r.body, "created_at": now, "attempts": 0,
                                    "next_at": now} for r in rows])
            dropped = {}
            for endpoint in sorted({r.endpoint for r in rows}):
                # The newest `cap` rows stay: the first id past them marks what goes.
                past = c.execute(select(d.c.id).where(d.c.endpoint == endpoint)
                                 .order_by(d.c.id.desc()).limit(1)
                                 .offset(caps[endpoint])).scalar_one_or_none()
                if past is not None:
                    gone = c.execute(delete(d).where(d.c.endpoint == endpoint,
                                                     d.c.id <= past)).rowcount
                    dropped[endpoint] = gone
            return dropped
        return await self.db.write(tx)

    def _free(self, endpoint: str, owner: str, now: float) -> ColumnElement[bool]:
        return and_(lease.c.endpoint == endpoint,
                    or_(lease.c.owner.is_(None), lease.c.expires < now, lease.c.owner == owner))

    async def claim(self, endpoint: str, owner: str, lease_seconds: float, limit: int
                    ) -> list[Delivery]:
        """Up to `limit` of the endpoint's oldest rows, under `owner`'s lease, if the oldest
        is due and nobody else holds the lease; else []."""
        head = (select(d.c.next_at).where(d.c.endpoint == endpoint)
                .order_by(d.c.id).limit(1))
        # Every worker asks every poll: a read first (no write lock on SQLite).
        due = await self.db.read(lambda c: c.execute(head).scalar_one_or_none())
        if due is None or due > time.time():
            return []

        def tx(c: Connection) -> list[Delivery]:
            now = time.time()
            took = c.execute(update(lease).where(self._free(endpoint, owner, now))
                             .values(owner=owner, expires=now + lease_seconds)).rowcount
            if took != 1:
                return []
            found = c.execute(select(d.c.id, d.c.event_id, d.c.body, d.c.attempts,
                                     d.c.created_at, d.c.next_at)
                              .where(d.c.endpoint == endpoint).order_by(d.c.id)
                              .limit(limit)).all()
            if not found or found[0].next_at > now:
                self._let_go(c, endpoint, owner)
                return []
            return [Delivery(r.id, r.event_id, r.body, r.attempts, r.created_at)
                    for r in found]
        return await self.db.write(tx)

    @staticmethod
    def _let_go(c: Connection, endpoint: str, owner: str) -> None:
        """The lease is held only while there is work: with none due, any worker of any
        replica may take the endpoint's next event at once."""
        c.execute(update(lease).where(lease.c.endpoint == endpoint, lease.c.owner == owner)
                  .values(owner=None, expires=None))

    async def delivered(self, endpoint: str, owner: str, ids: Sequence[int]) -> int:
        """Drop the delivered rows; with none left, let go of the lease."""
        def tx(c: Connection) -> int:
            n = c.execute(delete(d).where(d.c.endpoint == endpoint,
                                          d.c.id.in_(list(ids)))).rowcount
            if c.execute(select(d.c.id).where(d.c.endpoint == endpoint).limit(1)).first() \
                    is None:
                self._let_go(c, endpoint, owner)
            return n
        return await self.db.write(tx)

    async def failed(self, endpoint: str, owner: str, ids: Sequence[int], error: str,
                     delay: Callable[[int], float]) -> float:
        """Count a failed attempt on `ids`; they are due again after `delay(attempts)`, for
        whichever worker claims first then. Returns that delay."""
        def tx(c: Connection) -> float:
            attempts = c.execute(select(func.max(d.c.attempts))
                                 .where(d.c.id.in_(list(ids)))).scalar_one_or_none() or 0
            wait = delay(attempts + 1)
            c.execute(update(d).where(d.c.endpoint == endpoint, d.c.id.in_(list(ids)))
                      .values(attempts=d.c.attempts + 1, last_error=error[:2000],
                              next_at=time.time() + wait))
            self._let_go(c, endpoint, owner)
            return wait
        return await self.db.write(tx)

    async def release(self, endpoint: str, owner: str) -> None:
        await self.db.write(lambda c: self._let_go(c, endpoint, owner))

    async def states(self, names: Sequence[str]) -> list[EndpointState]:
        def run(c: Connection) -> list[EndpointState]:
            counts = {r.endpoint: (r.n, r.first, r.oldest) for r in c.execute(
                select(d.c.endpoint, func.count().label("n"), func.min(d.c.id).label("first"),
                       func.min(d.c.created_at).label("oldest"))
                .group_by(d.c.endpoint)).all()}
            leases = {r.endpoint: r for r in c.execute(select(lease)).all()}
            states = []
            for name in names:
                n, first, oldest = counts.get(name, (0, None, None))
                head = (c.execute(select(d.c.attempts, d.c.next_at, d.c.last_error)
                                  .where(d.c.id == first)).first()
                        if first is not None else None)
                held = leases.get(name)
                states.append(EndpointState(
                    name, n, oldest, head.attempts if head else 0,
                    head.next_at if head else None, head.last_error if head else None,
                    held.owner if held else None, held.expires if held else None))
            return states
        return await self.db.read(run)
