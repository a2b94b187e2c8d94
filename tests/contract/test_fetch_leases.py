"""Fetch leases (index/fetch_leases.py) behave the same on SQLite and PostgreSQL: one owner
per digest however many replicas claim at once, an expiry that frees a dead owner's lease,
and only the owner can extend or release it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stablemirror.index.db import Database
from stablemirror.index.fetch_leases import FetchLeases
from tests.contract.test_index import BACKENDS, _url


@pytest.fixture(params=BACKENDS)
async def databases(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> AsyncIterator[list[Database]]:
    url = _url(request.param, request, tmp_path)
    dbs = [Database(url) for _ in range(4)]  # four replicas, each with its own pool
    yield dbs
    for db in dbs:
        await db.close()


async def test_concurrent_claims_have_exactly_one_owner(databases: list[Database]) -> None:
    leases = [FetchLeases(db) for db in databases]
    for round_no in range(15):  # bounded: 15 digests, every replica races for each
        digest = f"sha256:{round_no:064x}"
        owners = await asyncio.gather(*(lease.claim(digest, f"r{i}", 30)
                                        for i, lease in enumerate(leases)))
        assert len(set(owners)) == 1, owners
        winner = owners[0]
        assert await leases[0].holder(digest) == winner
        # only the winner extends; a loser's extend changes nothing
        assert [await lease.extend(digest, f"r{i}", 30) for i, lease in enumerate(leases)
                ].count(True) == 1


async def test_an_expired_lease_is_taken_over_and_the_old_owner_loses_it(
        databases: list[Database]) -> None:
    a, b = FetchLeases(databases[0]), FetchLeases(databases[1])
    digest = "sha256:" + "ab" * 32
    assert await a.claim(digest, "replica-a", 0.3) == "replica-a"
    assert await b.claim(digest, "replica-b", 30) == "replica-a"  # still held
    await asyncio.sleep(0.4)
    assert await a.holder(digest) is None  # lapsed: nobody holds it
    assert await b.claim(digest, "replica-b", 30) == "replica-b"
    assert not await a.extend(digest, "replica-a", 30)
    await a.release(digest, "replica-a")  # not the owner: nothing happens
    assert await a.holder(digest) == "replica-b"
    await b.release(digest, "replica-b")
    assert await a.holder(digest) is None
    assert await a.claim(digest, "replica-a", 0.1) == "replica-a"
    await asyncio.sleep(0.2)
    assert await a.prune() == 1
