"""Replicas: `serve` processes sharing one throwaway PostgreSQL index and one data dir
(standing in for the bucket), talked to over HTTP and through `stablemirror jobs list`.

A periodic job runs once per period across both; a replica killed -9 mid-job loses it to
the other once its lease runs out; 200 concurrent clients never take more PostgreSQL
connections than the pool allows; a PostgreSQL restart under load gives clean OCI errors
and then answers again, without restarting stablemirror.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from tests.support.live import LiveServer
from tests.support.oci_http import Api, random_bytes, wait_until
from tests.support.postgres import PostgresServer, running_postgres

FAST_JOBS = {"STABLEMIRROR_JOBS__POLL_SECONDS": "0.1", "STABLEMIRROR_JOBS__LEASE_SECONDS": "3"}


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A server of this module's own: one test restarts it."""
    with running_postgres("the replica tests") as server:
        yield server


class Replicas:
    def __init__(self, pg: PostgresServer, root: Path) -> None:
        self.pg = pg
        self.database = pg.create_database()
        self.data = root / "shared"
        self.servers: dict[str, LiveServer] = {}

    def url(self, application_name: str) -> str:
        return f"{self.pg.url(self.database)}?application_name={application_name}"

    def start(self, name: str, **env: str) -> LiveServer:
        server = LiveServer(self.data, env={
            "STABLEMIRROR_DATABASE_URL": self.url(name), "STABLEMIRROR_REPLICA_ID": name,
            **FAST_JOBS, **env})
        server.start(timeout=60)
        self.servers[name] = server
        return server

    def jobs(self, *args: str) -> str:
        """`stablemirror jobs list` as an operator would run it, on any host."""
        r = subprocess.run([sys.executable, "-m", "stablemirror", "jobs", "list",
                            "--limit", "500", *args], capture_output=True, text=True,
                           timeout=60, env={"STABLEMIRROR_DATABASE_URL": self.url("cli"),
                                            "COLUMNS": "250", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        return r.stdout

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.pg.url(self.database).replace("postgresql+psycopg",
                                                                 "postgresql")) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def replicas(pg: PostgresServer, tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(pg, tmp_path)
    yield r
    r.stop()


def test_a_periodic_job_runs_once_per_period_across_two_replicas(replicas: Replicas) -> None:
    every = {"STABLEMIRROR_GC__INTERVAL_SECONDS": "0.5", "STABLEMIRROR_LOG_LEVEL": "debug"}
    started = time.time()
    a, b = replicas.start("a", **every), replicas.start("b", **every)
    time.sleep(6)
    slots = int(time.time() // 0.5) - int(started // 0.5) + 1
    rows = replicas.rows("SELECT id, state, attempts, lease_owner, dedup_key FROM jobs "
                         "WHERE kind = 'gc' AND state = 'done'")
    assert 8 <= len(rows) <= slots  # one per half second while both ran, never two
    assert {r[2] for r in rows} == {1}
    assert len({r[4] for r in rows}) == len(rows)
    owners = {str(r[3]).split(":")[0] for r in rows}
    assert owners == {"a", "b"}  # both take their turns
    # Each slot ran on exactly one of them, by their own logs.
    ran = Counter(int(m) for log in (a.log(), b.log())
                  for m in re.findall(r"job (\d+) gc done", log))
    assert {r[0] for r in rows} <= set(ran)
    assert set(ran.values()) == {1}
    listing = replicas.jobs("--kind", "gc", "--state", "done")
    assert listing.count(" gc ") >= len(rows) and "done" in listing


def test_a_killed_replicas_job_is_taken_over_after_its_lease(replicas: Replicas) -> None:
    first = replicas.start("seed")
    api = Api(first)
    for _ in range(4):
        api.push_blob("big/blobs", random_bytes(1 << 20))
    first.stop()
    # A slow scrub (4 MiB at 400 kB/s: ~10 s), once an hour: the first pass starts now.
    slow = {"STABLEMIRROR_INTEGRITY__SCRUB__INTERVAL_SECONDS": "3600",
            "STABLEMIRROR_INTEGRITY__SCRUB__RATE_BYTES_PER_SECOND": "400000"}
    replicas.start("a", **slow)
    replicas.start("b", **slow)

    def scrub_row() -> tuple[object, ...] | None:
        rows = replicas.rows("SELECT state, lease_owner, attempts FROM jobs "
                             "WHERE kind = 'scrub'")
        return rows[0] if rows else None

    wait_until(lambda: (row := scrub_row()) is not None and row[0] == "running", 30,
               "a replica to claim the scrub")
    row = scrub_row()
    assert row is not None
    holder = str(row[1]).split(":")[0]
    other = "b" if holder == "a" else "a"
    listing = replicas.jobs("--state", "running")
    assert "scrub" in listing and f"{holder}:" in listing
    replicas.servers[holder].kill()
    killed_at = time.monotonic()
    wait_until(lambda: str((scrub_row() or ("", ""))[1]).startswith(f"{other}:"), 30,
               "the other replica to take the scrub over")
    assert time.monotonic() - killed_at >= 1.0  # not before the lease ran out (3 s)
    wait_until(lambda: (scrub_row() or ("",))[0] == "done", 60, "the scrub to finish")
    final = scrub_row()
    assert final is not None and final[0] == "done" and final[2] == 2
    listing = replicas.jobs("--kind", "scrub")
    assert re.search(rf"scrub\s+│\s+done\s+│\s+2/5\s+│.*{other}:", listing), listing


async def _hammer(url: str, clients: int, seconds: float) -> Counter[int]:
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            async with session.get(url) as r:
                await r.read()
                statuses[r.status] += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return statuses


def test_200_clients_never_take_more_connections_than_the_pool(replicas: Replicas) -> None:
    server = replicas.start("pooled", STABLEMIRROR_DATABASE__POOL_SIZE="4",
                            STABLEMIRROR_DATABASE__MAX_OVERFLOW="2")
    Api(server).push_image("load/app", "v1")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set() and len(samples) < 2000:
            samples.append(int(replicas.pg.scalar(  # type: ignore[call-overload]
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pooled'")))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        statuses = asyncio.run(_hammer(server.url + "/v2/load/app/manifests/v1", 200, 5))
    finally:
        done.set()
        sampler.join(30)
    assert statuses[200] > 500 and set(statuses) == {200}, statuses
    assert max(samples) <= 6, Counter(samples)
    assert max(samples) >= 2  # the load did use the pool


def test_a_postgresql_restart_under_load_fails_cleanly_and_recovers(replicas: Replicas
                                                                    ) -> None:
    server = replicas.start("restarted")
    Api(server).push_image("load/app", "v1")
    pid = server.proc.pid if server.proc else None
    url = server.url + "/v2/load/app/manifests/v1"
    outcomes: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as http:
            while not stop.is_set() and len(outcomes) < 100_000:
                r = http.get(url, timeout=30)
                code = r.json()["errors"][0]["code"] if r.status_code != 200 else ""
                outcomes.append((time.monotonic(), r.status_code, code))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        replicas.pg.restart()
        back = time.monotonic()
        wait_until(lambda: any(t > back + 0.5 and s == 200 for t, s, _c in outcomes[-50:]),
                   20, "manifest GETs to succeed again")
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failures = Counter((s, c) for _t, s, c in outcomes if s != 200)
    assert set(failures) <= {(503, "UNAVAILABLE")}, failures
    assert failures, "the restart was never noticed"  # it did happen under load
    late = [s for t, s, _c in outcomes if t > back + 1.5]
    assert late and set(late) == {200}
    assert server.proc is not None and server.proc.pid == pid and server.proc.poll() is None
