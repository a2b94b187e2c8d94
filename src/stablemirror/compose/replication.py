"""Composition of replication (called from app.py; `replicate` commands use the same
parts in-process): the status store, the job handlers, the cron slot, the lag gauge, and the
event sink for the registry's publisher (`ReplicationParts.sinks()`)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stablemirror.compose.background import Background
from stablemirror.compose.jobs import job_queue
from stablemirror.config import Settings
from stablemirror.events.model import EventSink
from stablemirror.index.job_queue import JobQueue
from stablemirror.jobs.runner import JobContext
from stablemirror.metrics import Metrics
from stablemirror.replication.config import ReplicationSettings, Rule
from stablemirror.replication.run import RuleRun, RunResult, Trigger
from stablemirror.replication.trigger import (
    CRON_EVERY,
    CRON_KIND,
    EVENT_KIND,
    RUN_KIND,
    ReplicationTrigger,
    enqueue_cron_ticks,
    oldest_pending_event,
)

if TYPE_CHECKING:  # SQLAlchemy: not on a node's sqlite3 index (compose/index.py)
    from stablemirror.index.db import Database
    from stablemirror.index.sql_replication import SqlReplicationStatus

log = logging.getLogger("stablemirror.replication")
LAG_EVERY = 15.0


class UnknownRule(ValueError):
    pass


def self_registry(settings: Settings) -> str:
    """host:port this server answers on, as its own rules reach it (loopback for a
    wildcard listen address)."""
    host, port = settings.host_port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class ReplicationParts:
    settings: ReplicationSettings
    status: SqlReplicationStatus | None  # None on a node's sqlite3 index: no rules there
    queue: JobQueue
    registry: str
    metrics: Metrics | None = None

    def __post_init__(self) -> None:
        self.trigger = ReplicationTrigger(self.settings.rules, self.queue)

    def sinks(self) -> list[EventSink]:
        """The EventSinks for the registry's event publisher: the trigger of
        event-triggered rules (none when no rule has `trigger.event`)."""
        return [self.trigger] if self.trigger.rules else []

    def rule(self, name: str) -> Rule:
        rule = self.settings.rule(name)
        if rule is None:
            known = ", ".join(r.name for r in self.settings.rules) or "none configured"
            raise UnknownRule(f"no replication rule {name!r} (rules: {known})")
        return rule

    def runner(self, rule: Rule, ctx: JobContext | None = None) -> RuleRun:
        return RuleRun(rule, self.registry, self.status, self.metrics,
                       ctx.keep_going if ctx is not None else (lambda: True))

    async def run_now(self, name: str, dry_run: bool = False) -> RunResult:
        return await self.runner(self.rule(name)).run("manual", dry_run=dry_run)

    async def enqueue_run(self, name: str) -> int | None:
        self.rule(name)
        return await self.queue.enqueue(RUN_KIND, {"rule": name, "trigger": "manual"})

    async def status_rows(self) -> list[dict[str, Any]]:
        now = time.time()
        rows = {s.rule: s for s in await self.status.all()} if self.status else {}
        out = []
        for rule in self.settings.rules:
            s = rows.get(rule.name)
            waiting = await oldest_pending_event(self.queue, rule.name)
            lag = max(s.lag(now) if s else 0.0, now - waiting if waiting else 0.0)
            out.append({
                "rule": rule.name, "mode": rule.mode, "source": rule.source,
                "destination": rule.destination,
                "trigger": {"event": rule.trigger.event, "cron": rule.trigger.cron},
                "last_started": s.last_started if s else None,
                "last_finished": s.last_finished if s else None,
                "last_success": s.last_success if s else None,
                "last_error": s.last_error if s else None,
                "lag_seconds": lag,
                "artifacts_copied": s.artifacts_copied if s else 0,
                "bytes_copied": s.bytes_copied if s else 0,
                "pending_artifacts": s.pending_artifacts if s else 0,
                "pending_bytes": s.pending_bytes if s else 0,
                "events_waiting_since": waiting,
                "current": s.current if s else []})
        return out

    async def update_lag(self) -> None:
        if self.metrics is None:
            return
        for row in await self.status_rows():
            self.metrics.set_replication_lag(row["rule"], row["lag_seconds"])

    # -- job handlers ---------------------------------------------------------------------
    async def handle_run(self, ctx: JobContext) -> None:
        rule = self.settings.rule(str(ctx.job.payload.get("rule")))
        if rule is None:
            return  # the rule was removed from the settings since
        trigger: Trigger = "cron" if ctx.job.payload.get("trigger") == "cron" else "manual"
        result = await self.runner(rule, ctx).run(trigger)
        log.info("replication %s (%s): %d copied, %d unchanged, %d deleted, %d bytes",
                 rule.name, trigger, len(result.copied), result.unchanged,
                 len(result.deleted), result.bytes)

    async def handle_event(self, ctx: JobContext) -> None:
        p = ctx.job.payload
        rule = self.settings.rule(str(p.get("rule")))
        if rule is None:
            return
        repository, reference = str(p["repository"]), str(p["reference"])
        run = self.runner(rule, ctx)
        if p.get("action") == "delete":
            await run.run("event", delete=(repository, reference))
        elif p.get("action") == "promote":
            await run.run("event", repository=repository)
        else:
            await run.run("event", only=(repository, reference))

    async def handle_cron(self, _ctx: JobContext) -> None:
        await enqueue_cron_ticks(self.settings.rules, self.queue)


def _status(db: Database) -> SqlReplicationStatus:
    from stablemirror.index.sql_replication import SqlReplicationStatus

    return SqlReplicationStatus(db)


def build_replication(settings: Settings, db: Database | None, background: Background,
                      metrics: Metrics | None, queue: JobQueue) -> ReplicationParts:
    """`db`: SQLAlchemy's; None on a node's sqlite3 index, which has no rules."""
    parts = ReplicationParts(settings.replication, _status(db) if db else None, queue,
                             self_registry(settings), metrics)
    if not settings.replication.rules:
        return parts
    if db is None:
        raise ValueError("replication.rules need database.backend sqlalchemy")
    for rule in settings.replication.rules:
        if metrics is not None:
            metrics.declare_replication_rule(rule.name)
    runner = background.runner
    if runner is not None:
        runner.handle(RUN_KIND, parts.handle_run)
        runner.handle(EVENT_KIND, parts.handle_event)
        if any(r.trigger.cron for r in settings.replication.rules):
            background.job(CRON_KIND, CRON_EVERY, parts.handle_cron)
    background.every("replication.lag", LAG_EVERY, parts.update_lag)
    return parts


def replication_sinks(parts: ReplicationParts) -> list[EventSink]:
    """What the lead wires into the event publisher's sink list (compose/app.py)."""
    return parts.sinks()


@asynccontextmanager
async def replication_commands(settings: Settings) -> AsyncIterator[ReplicationParts]:
    """The parts `stablemirror replicate` uses in-process (any host that reaches the
    index): status from the index, runs in this process."""
    from stablemirror.index.db import Database

    db = Database(settings.index_url)
    try:
        yield ReplicationParts(settings.replication, _status(db),
                               job_queue(settings, db), self_registry(settings))
    finally:
        await db.close()
