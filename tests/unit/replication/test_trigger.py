"""The event trigger and the cron ticks of replication rules, on the real job queue over a
migrated SQLite index: `accept` enqueues one durable job per matching rule before it
returns; cron ticks are one job per rule and minute however many workers ask."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablemirror.events.model import RegistryEvent
from stablemirror.index.db import Database
from stablemirror.index.migrate import upgrade
from stablemirror.index.sql_jobs import SqlJobQueue
from stablemirror.replication.config import ReplicationSettings
from stablemirror.replication.trigger import (
    EVENT_KIND,
    RUN_KIND,
    ReplicationTrigger,
    enqueue_cron_ticks,
    oldest_pending_event,
)

SUBJECT = "sha256:" + "ab" * 32


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    asyncio.run(database.close())


def rules(**extra: object) -> ReplicationSettings:
    return ReplicationSettings.model_validate({"rules": [
        {"name": "models", "destination": "https://eu.example", "trigger": {"event": True},
         "filters": {"repositories": ["models/*"], "tags": "semver:>=1.0.0"},
         "delete": "propagate"},
        {"name": "all-keep", "destination": "https://us.example", "trigger": {"event": True}},
        {"name": "nightly", "destination": "https://ap.example",
         "trigger": {"cron": "30 2 * * *"}},
        *extra.get("more", []),  # type: ignore[misc]
    ]})


def test_accept_enqueues_one_durable_job_per_matching_rule(db: Database) -> None:
    queue = SqlJobQueue(db)
    trigger = ReplicationTrigger(rules().rules, queue)
    push = RegistryEvent("push", "models/llama", digest=SUBJECT, tag="1.2.0", time=1000.0)

    async def go() -> None:
        await trigger.accept(push)
        await trigger.accept(push)  # the same event again: still one job per rule
        jobs = await queue.list(kind=EVENT_KIND)
        assert sorted(j.payload["rule"] for j in jobs) == ["all-keep", "models"]
        by_rule = {j.payload["rule"]: j for j in jobs}
        assert by_rule["models"].payload["reference"] == "1.2.0"
        assert by_rule["models"].state == "queued"
        assert await oldest_pending_event(queue, "models") == 1000.0

    asyncio.run(go())


def test_filters_decide_which_rules_an_event_reaches(db: Database) -> None:
    queue = SqlJobQueue(db)
    trigger = ReplicationTrigger(rules().rules, queue)

    async def go() -> dict[str, list[str]]:
        events = {
            "other-repo": RegistryEvent("push", "base/alpine", digest=SUBJECT, tag="1.0.0"),
            "not-semver": RegistryEvent("push", "models/llama", digest=SUBJECT, tag="latest"),
            "delete": RegistryEvent("delete", "models/llama", digest=SUBJECT, tag="1.0.0"),
            "sig": RegistryEvent("push", "models/llama", digest="sha256:" + "cd" * 32,
                                 tag=f"sha256-{'ab' * 32}.sig"),
            "mount": RegistryEvent("mount", "models/llama", digest=SUBJECT),
        }
        seen = {}
        for name, event in events.items():
            before = {j.id for j in await queue.list(kind=EVENT_KIND)}
            await trigger.accept(event)
            new = [j for j in await queue.list(kind=EVENT_KIND) if j.id not in before]
            seen[name] = sorted(f"{j.payload['rule']}:{j.payload['reference']}" for j in new)
        return seen

    seen = asyncio.run(go())
    assert seen["other-repo"] == ["all-keep:1.0.0"]
    assert seen["not-semver"] == ["all-keep:latest"]
    assert seen["delete"] == ["models:1.0.0"]  # all-keep keeps deletes
    # A signature's tag copies its subject (the copier brings the .sig tag with it).
    assert seen["sig"] == [f"all-keep:{SUBJECT}", f"models:{SUBJECT}"]
    assert seen["mount"] == []


def test_a_cron_tick_is_one_run_however_many_workers_ask(db: Database) -> None:
    queue = SqlJobQueue(db)
    settings = rules()
    tick = calendar.timegm((2026, 12, 1, 2, 30, 0)) + 20  # 02:30:20 UTC

    async def go() -> None:
        first = await asyncio.gather(*(enqueue_cron_ticks(settings.rules, queue, tick)
                                       for _ in range(4)))
        assert sum(len(ids) for ids in first) == 1
        later = await enqueue_cron_ticks(settings.rules, queue, tick + 120)  # 02:32: no tick
        assert later == []
        jobs = await queue.list(kind=RUN_KIND)
        assert [(j.payload["rule"], j.payload["trigger"]) for j in jobs] == [
            ("nightly", "cron")]
        nothing = await enqueue_cron_ticks(settings.rules, queue, tick - 3600)  # 01:30
        assert nothing == []

    asyncio.run(go())
