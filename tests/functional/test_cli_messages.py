"""What a user reads: no migration chatter, a shutdown that says so, a dry run that says
"would", the role in `status`, and the password rule up front."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer

TIMEOUT = 60


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablemirror", *args], input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_logs_no_migrations_and_one_line_as_shutdown_begins_and_ends(
        server_factory: Callable[..., LiveServer], workers: int) -> None:
    srv = server_factory(workers=workers)
    srv.stop()  # SIGTERM
    log = srv.log()
    assert "alembic" not in log, log
    begins = [line for line in log.splitlines() if "shutting down" in line]
    ends = [line for line in log.splitlines() if "stopped: shutdown took" in line]
    assert len(begins) == 1 and f"{workers} worker(s)" in begins[0], log
    assert len(ends) == 1, log
    assert log.index(begins[0]) < log.index(ends[0])


def test_gc_and_scrub_print_no_migrations(server: LiveServer) -> None:
    for command in ("gc", "scrub"):
        r = cli(command, "--data-dir", str(server.data_dir))
        assert r.returncode == 0, r.stderr
        assert "alembic" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_gc_dry_run_says_would_not_deleted(server: LiveServer) -> None:
    r = cli("gc", "--data-dir", str(server.data_dir), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would delete: blobs" in r.stdout and "would free: bytes" in r.stdout, r.stdout
    assert "deleted" not in r.stdout and "freed" not in r.stdout, r.stdout
    real = cli("gc", "--data-dir", str(server.data_dir))
    assert "blobs deleted" in real.stdout and "would" not in real.stdout, real.stdout


def test_the_role_shows_in_status(server_factory: Callable[..., LiveServer]) -> None:
    center = server_factory()
    edge = server_factory("--role", "edge", "--upstream", center.url)
    for srv, role in ((center, "center"), (edge, "edge")):
        assert requests.get(f"{srv.url}/status", timeout=TIMEOUT).json()["role"] == role
        r = cli("status", "--url", srv.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"role {role}" in r.stdout, r.stdout


class DefaultWorkersServer(LiveServer):
    """Started without --workers, so the role's default applies."""

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        argv, env = super().command()
        at = argv.index("--workers")
        return argv[:at] + argv[at + 2:], env


def test_a_node_runs_one_worker_by_default(server: LiveServer, tmp_path: Path) -> None:
    node = DefaultWorkersServer(tmp_path / "node", "--role", "node", "--upstream", server.url)
    node.start()
    try:
        doc = requests.get(f"{node.url}/status", timeout=TIMEOUT).json()
        assert (doc["role"], doc["workers"]) == ("node", 1)
    finally:
        node.stop()


def test_user_add_states_the_password_rule(tmp_path: Path) -> None:
    help_text = cli("user", "add", "--help").stdout
    assert "at least 8 characters" in " ".join(help_text.split()), help_text
    r = cli("user", "add", "dan", "--password-stdin", "--data-dir", str(tmp_path),
            stdin="short\n")
    assert r.returncode == 2
    assert "at least 8 characters (got 5)" in r.stdout + r.stderr, r.stdout + r.stderr
