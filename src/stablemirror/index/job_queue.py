"""The persistent job queue protocol (docs/jobs.md). Every backend passes the same contract
suite (tests/contract/test_job_queue.py).

A job is claimed by one owner at a time under a lease; the owner extends it (heartbeat)
while it works and completes or fails it. A lease that runs out is taken over by the next
claimer, so a killed replica's job runs again elsewhere. A failure is retried after an
exponential backoff with jitter until `max_attempts`, then the job is dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

JobState = Literal["queued", "running", "done", "failed", "dead"]
# What enqueue_periodic did: inserted the slot, found it inserted already (by any replica),
# or found the previous run of the kind still unfinished (try the slot again later).
PeriodicResult = Literal["enqueued", "taken", "busy"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "dead")


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int  # claims so far, this one included while running
    max_attempts: int
    run_at: float
    pinned_to: str | None
    lease_owner: str | None
    lease_expires: float | None
    last_error: str | None
    dedup_key: str | None
    created_at: float
    updated_at: float


class JobQueue(Protocol):
    async def enqueue(self, kind: str, payload: dict[str, Any] | None = None, *,
                      run_at: float | None = None, dedup_key: str | None = None,
                      max_attempts: int | None = None, pinned_to: str | None = None
                      ) -> int | None:
        """The new job's id; None if a job with `dedup_key` exists already (whatever its
        state: a periodic slot runs once)."""
        ...

    async def enqueue_periodic(self, kind: str, dedup_key: str, *, run_at: float,
                               max_attempts: int | None = None, pinned_to: str | None = None
                               ) -> PeriodicResult:
        """Insert a periodic job's slot once across replicas, and only when no job of `kind`
        (with the same `pinned_to`) is unfinished: a periodic job's runs never overlap."""
        ...

    async def claim(self, owner: str, kinds: list[str], lease_seconds: float,
                    replica: str | None = None) -> Job | None:
        """The oldest due job of one of `kinds` (queued or failed with run_at passed, or
        running under an expired lease), now running under `owner`'s lease; None if there
        is none. Jobs pinned to another replica are left alone. Exactly one claimer gets a
        job. A job whose lease expired on its last attempt becomes dead instead."""
        ...

    async def heartbeat(self, job_id: int, owner: str, lease_seconds: float) -> bool:
        """Extend the lease; False (and nothing changed) unless `owner` still holds it."""
        ...

    async def complete(self, job_id: int, owner: str) -> bool: ...

    async def fail(self, job_id: int, owner: str, error: str) -> JobState | None:
        """Record a failure: "failed" (retried after a backoff) or "dead" (no attempts
        left); None if `owner` no longer holds the job."""
        ...

    async def release(self, job_id: int, owner: str) -> bool:
        """Give a running job back at once, as if this attempt never happened (shutdown)."""
        ...

    async def get(self, job_id: int) -> Job | None: ...

    async def list(self, state: JobState | None = None, kind: str | None = None,
                   limit: int = 100) -> list[Job]:
        """Newest first."""
        ...

    async def prune(self, done_before: float, dead_before: float) -> int:
        """Drop done jobs last updated before `done_before`, dead ones before `dead_before`."""
        ...
