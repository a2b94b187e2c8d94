"""The pull path's reads (index/hot_reads.py) on PostgreSQL: bounded connections, and a
server restart costs the requests in flight a clean 503, not the process its health."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import bindparam, select

from stablemirror.index import schema as s
from stablemirror.index.hot_reads import PG_CONNECTIONS, PgHotReads, hot_reads
from stablemirror.index.migrate import upgrade
from stablemirror.oci.errors import Unavailable
from tests.contract.conftest import PostgresServer, _pg_bin


def _statements() -> dict[str, object]:
    return {"repo": select(s.repositories.c.id, s.repositories.c.name)
            .where(s.repositories.c.name == bindparam("name"))}


def _connections(pg: PostgresServer, database: str) -> int:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                           (database,)).fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    name = postgres.create_database()
    upgrade(postgres.url(name))
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="postgres", dbname=name,
                         autocommit=True) as conn:
        conn.execute("INSERT INTO repositories (name, created_at) VALUES ('library/app', 0)")
    return name


async def test_many_concurrent_reads_use_a_bounded_number_of_connections(
        postgres: PostgresServer, database: str) -> None:
    reads = hot_reads(postgres.url(database), _statements())  # type: ignore[arg-type]
    assert isinstance(reads, PgHotReads)
    try:
        rows = await asyncio.gather(*(reads.one("repo", name="library/app")
                                      for _ in range(200)))
        assert {row[1] for row in rows if row is not None} == {"library/app"}
        assert await reads.one("repo", name="nothing/here") is None
        assert _connections(postgres, database) <= PG_CONNECTIONS
    finally:
        await reads.close()


async def test_a_restarted_server_gives_503_then_recovers(postgres: PostgresServer,
                                                          database: str) -> None:
    reads = hot_reads(postgres.url(database), _statements())  # type: ignore[arg-type]
    assert reads is not None
    try:
        assert await reads.one("repo", name="library/app") is not None
        postgres._run([_pg_bin("pg_ctl"), "-D", str(postgres.data), "-l", str(postgres.log),
                       "-m", "fast", "-w",
                       "-t", "60", "restart"])
        outcomes: list[str] = []
        for _ in range(PG_CONNECTIONS + 2):  # each idle connection is found dead once
            try:
                found = await reads.one("repo", name="library/app")
                outcomes.append("ok" if found is not None else "missing")
            except Unavailable:
                outcomes.append("503")
        assert outcomes[-1] == "ok", outcomes
        assert set(outcomes) <= {"ok", "503"}, outcomes
    finally:
        await reads.close()
