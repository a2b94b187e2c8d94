"""Replication as jobs of the index's queue (docs/jobs.md, docs/replication.md).

* `ReplicationTrigger` is the EventSink of event-triggered rules: for every rule an event
  matches it enqueues one durable `replication.event` job (dedup key: rule + event id, so an
  event accepted twice is one job) before `accept` returns; the job is retried with backoff
  until the destination takes it, so a destination that is down misses nothing.
* `replication.cron`, a periodic job once a minute across all workers and replicas, enqueues
  one `replication.run` per rule and cron tick (dedup key: rule + minute).
* `replication.run` runs a whole rule (cron or manual)."""

from __future__ import annotations

import time
from typing import Any

from stablemirror.events.model import RegistryEvent
from stablemirror.index.job_queue import JobQueue
from stablemirror.replication.config import SELF, Rule
from stablemirror.replication.cron import parse_cron
from stablemirror.replication.filters import ATTACHED_TAG, parse_tag_filter, repository_matches

EVENT_KIND = "replication.event"
RUN_KIND = "replication.run"
CRON_KIND = "replication.cron"
CRON_EVERY = 60.0
CRON_LOOKBACK_MINUTES = 5  # a cron slot that ran late still enqueues the ticks it missed


def event_reference(event: RegistryEvent) -> str | None:
    """What an event asks to copy: its tag; for cosign's and the referrers fallback's tags,
    the subject digest they are attached to (the copier brings them along); else the
    digest."""
    if event.tag and ATTACHED_TAG.match(event.tag):
        alg, _, rest = event.tag.partition("-")
        return f"{alg}:{rest.split('.')[0]}"
    return event.tag or event.digest or None


class ReplicationTrigger:
    def __init__(self, rules: list[Rule], queue: JobQueue) -> None:
        self.rules = [r for r in rules if r.trigger.event and r.source == SELF]
        self.queue = queue

    def matching(self, event: RegistryEvent) -> list[Rule]:
        found = []
        for rule in self.rules:
            if event.action == "mount" or not repository_matches(
                    event.repository, rule.filters.repositories):
                continue
            if event.action == "delete" and rule.delete != "propagate":
                continue
            tag = event.tag
            if tag and not ATTACHED_TAG.match(tag) and event.action != "promote" \
                    and not parse_tag_filter(rule.filters.tags).admits(tag):
                continue
            found.append(rule)
        return found

    async def accept(self, event: RegistryEvent) -> None:
        reference = event_reference(event)
        if reference is None:
            return
        for rule in self.matching(event):
            payload: dict[str, Any] = {
                "rule": rule.name, "action": event.action, "repository": event.repository,
                "reference": reference, "digest": event.digest, "event": event.id,
                "time": event.time}
            # The job row is the durable record, its payload's time the change's age (the
            # lag counts from the oldest unfinished one: oldest_pending_event).
            await self.queue.enqueue(EVENT_KIND, payload,
                                     dedup_key=f"{EVENT_KIND}/{rule.name}/{event.id}")


async def enqueue_cron_ticks(rules: list[Rule], queue: JobQueue, now: float | None = None
                             ) -> list[int]:
    """`replication.run` jobs for the cron ticks of the last few minutes (the current one
    included); each tick's dedup key makes it one run whichever worker gets there first.
    The ids of the jobs inserted by this call."""
    minute = int((time.time() if now is None else now) // 60)
    inserted = []
    for rule in rules:
        if rule.trigger.cron is None:
            continue
        cron = parse_cron(rule.trigger.cron)
        for m in range(minute - CRON_LOOKBACK_MINUTES, minute + 1):
            if not cron.matches(m):
                continue
            job = await queue.enqueue(RUN_KIND, {"rule": rule.name, "trigger": "cron",
                                                 "tick": m * 60},
                                      run_at=max(m * 60.0, time.time() - 1),
                                      dedup_key=f"{RUN_KIND}/{rule.name}/cron/{m}")
            if job is not None:
                inserted.append(job)
    return inserted


async def oldest_pending_event(queue: JobQueue, rule: str) -> float | None:
    """The time of the oldest event of `rule` not copied yet (its job unfinished)."""
    times = []
    for state in ("queued", "running", "failed"):
        for job in await queue.list(state, EVENT_KIND, limit=1000):
            if job.payload.get("rule") == rule:
                times.append(float(job.payload.get("time") or job.created_at))
    return min(times) if times else None
