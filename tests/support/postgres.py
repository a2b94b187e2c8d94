"""A real throwaway PostgreSQL server from the Debian binaries (initdb + pg_ctl), for the
contract suites (tests/contract/conftest.py) and the functional tests of replicas sharing
one index (tests/functional/jobs/).

It runs as an unprivileged user in a temporary directory, listening on a free loopback
port with its socket in the same directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import pytest

from tests.support.live import free_port

PG_USER = "postgres"


def _pg_bin(tool: str) -> str:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, tool), os.X_OK):
            return os.path.join(d, tool)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"PostgreSQL tool {tool!r} not found (apt-get install postgresql)")
    return found




def _as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
    return ["runuser", "-u", PG_USER, "--", *cmd]


class PostgresServer:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="stablemirror-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "server.log"
        self.port = free_port()
        self._names = count()

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(_as_pg_user(cmd), capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n{log[-3000:]}"
            )

    def start(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            _as_pg_user(["true"])  # creates the user if needed
            pw = pwd.getpwnam(PG_USER)
            for p in (self.base, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o755)
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust",
                   "-E", "UTF8", "--no-sync", "--locale=C"])
        opts = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                   "-w", "-t", "60", "start"])

    def restart(self) -> None:
        """pg_ctl restart (fast shutdown: open sessions are terminated), same port."""
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", "fast",
                   "-w", "-t", "60", "restart"])

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(_as_pg_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-m",
                                        "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                                     dbname="postgres", autocommit=True) as conn:
                    conn.execute(sql)
                return
            except psycopg.errors.ObjectInUse:
                # CREATE DATABASE ... TEMPLATE waits for the template's last session to end.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, template: str | None = None) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def scalar(self, sql: str, database: str = "postgres") -> object:
        """One value from a query, on a fresh connection of its own."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname=database,
                             autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return None if row is None else row[0]


@contextmanager
def running_postgres(purpose: str) -> Iterator[PostgresServer]:
    """A started server for a fixture; if it cannot start, the tests fail with its log (a
    suite that silently skips PostgreSQL proves nothing)."""
    server = PostgresServer()
    try:
        server.start()
    except Exception as e:
        server.stop()
        pytest.fail(f"could not start PostgreSQL for {purpose}: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
