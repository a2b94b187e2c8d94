"""Backends for the contract suites, including a real throwaway PostgreSQL server.

PostgreSQL runs from the Debian binaries (initdb + pg_ctl) as an unprivileged user in a
temporary directory, listening on a free loopback port with its socket in the same
directory. If it cannot start, every PostgreSQL test fails with the server's log: a
contract that silently skips its second backend proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres

__all__ = ["PostgresServer"]  # tests import it from here too


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres("the contract suite") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the throwaway server."""
    return postgres.url(postgres.create_database())


@pytest.fixture(scope="session")
def postgres_migrated_template(postgres: PostgresServer) -> str:
    """A database at the newest schema; tests clone it (CREATE DATABASE ... TEMPLATE)."""
    from stablemirror.index.migrate import upgrade

    name = postgres.create_database()
    upgrade(postgres.url(name))
    return name
