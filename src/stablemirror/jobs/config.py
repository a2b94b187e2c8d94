"""The `jobs` settings section (docs/jobs.md)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class JobSettings(BaseModel):
    lease_seconds: float = Field(
        default=60.0, gt=0, description="a claimed job is taken over this long after its "
        "runner's last heartbeat (heartbeats every third of it)")
    poll_seconds: float = Field(default=1.0, gt=0,
                                description="how often each worker looks for due jobs")
    concurrency: int = Field(default=2, ge=1, description="jobs one worker runs at once")
    max_attempts: int = Field(default=5, ge=1, description="runs before a job is dead")
    backoff_seconds: float = Field(default=10.0, ge=0,
                                   description="first retry delay; doubles per attempt")
    backoff_max_seconds: float = Field(default=900.0, ge=0, description="retry delay cap")
    keep_done_seconds: float = Field(default=86400.0, ge=0,
                                     description="done jobs are pruned after this")
    keep_dead_seconds: float = Field(default=7 * 86400.0, ge=0,
                                     description="dead jobs are pruned after this")
