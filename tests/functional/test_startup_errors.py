"""Start-up mistakes, through the real `stablemirror` command: each is exactly one line on
stderr naming the problem and the value, a non-zero exit, and never a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer, free_port

TIMEOUT = 60


def stablemirror(*args: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command; one that starts serving after all is killed, workers included."""
    with subprocess.Popen([sys.executable, "-m", "stablemirror", *args], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                          env={**os.environ, **(env or {})}, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def one_error_line(r: subprocess.CompletedProcess[str], *named: str, code: int) -> str:
    """The single stderr line, after checking the exit code and what it names."""
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    (line,) = lines
    assert line.startswith("stablemirror: error: "), line
    for value in named:
        assert value in line, line
    assert r.returncode == code, (r.returncode, line)
    return line


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """`directory` refuses new entries, for root too (chmod would not stop root): chmod
    when not root, else the immutable attribute, else a read-only bind mount."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True,
                      check=False).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        return
    if subprocess.run(["mount", "--bind", "-o", "ro", str(directory), str(directory)],
                      capture_output=True, check=False).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["umount", str(directory)], check=True)
        return
    raise RuntimeError("cannot make a directory unwritable for root here (chattr, mount)")


def serve_args(data_dir: Path, *extra: str) -> list[str]:
    return ["serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data_dir),
            "--workers", "1", *extra]


# -- settings: exit 2 -------------------------------------------------------------------------
def test_a_missing_config_file_fails_instead_of_starting_with_defaults(tmp_path: Path) -> None:
    r = stablemirror(*serve_args(tmp_path / "data", "--config", "/no/such.yaml"))
    one_error_line(r, "--config", "'/no/such.yaml'", "no such file", code=2)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("args", "named"), [
    (["--listen", "localhost"], ["--listen 'localhost'", "expected HOST:PORT"]),
    (["--listen", "127.0.0.1:70000"], ["--listen '127.0.0.1:70000'", "out of range"]),
    (["--workers", "0"], ["--workers 0", "at least 1"]),
    (["--upstream", "notaurl"], ["--upstream 'notaurl'", "http://"]),
    (["--role", "edge"], ["role 'edge'", "upstream"]),
    # refused by the command line parser before the schema sees them: one line all the same
    (["--workers", "many"], ["--workers", "integer"]),
    (["--role", "hub"], ["--role", "'hub'"]),
    (["--no-such-option"], ["--no-such-option"]),
])
def test_invalid_options_are_refused_by_the_schema(tmp_path: Path, args: list[str],
                                                  named: list[str]) -> None:
    argv = ["serve", "--data-dir", str(tmp_path / "data"), *args]
    if "--listen" not in args:
        argv += ["--listen", f"127.0.0.1:{free_port()}"]
    one_error_line(stablemirror(*argv), *named, code=2)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["serve", "gc", "scrub", "status"])
def test_a_misspelt_environment_variable_is_refused(tmp_path: Path, command: str) -> None:
    r = stablemirror(command, env={"STABLEMIRROR_AUTH_ENABLED": "true"}, cwd=tmp_path)
    one_error_line(r, "STABLEMIRROR_AUTH_ENABLED", "STABLEMIRROR_AUTH__ENABLED", code=2)


def test_an_unknown_nested_key_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "stablemirror.yaml"
    config.write_text("auth:\n  enabeld: true\n")
    r = stablemirror(*serve_args(tmp_path / "data", "--config", str(config)))
    one_error_line(r, str(config), "'auth.enabeld'", code=2)


# -- the listen address: exit 1, before the data dir is touched ----------------------------
def test_a_port_in_use_names_the_address_and_leaves_the_data_dir_alone(
        server: LiveServer) -> None:
    def files() -> dict[str, int]:  # every file (the metrics dir's too) and its mtime
        return {str(p.relative_to(server.data_dir)): p.stat().st_mtime_ns
                for p in server.data_dir.rglob("*") if p.is_file()}

    requests.get(f"{server.url}/v2/", timeout=TIMEOUT)  # the worker has metrics files now
    before = files()
    r = stablemirror("serve", "--listen", server.host, "--data-dir", str(server.data_dir))
    one_error_line(r, f"cannot listen on {server.host}", "address already in use", code=1)
    assert files() == before


def test_a_port_in_use_is_reported_before_the_data_dir_is_checked(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        r = stablemirror("serve", "--listen", address, "--data-dir", str(tmp_path / "new"))
    one_error_line(r, address, code=1)
    assert not (tmp_path / "new").exists()


# -- the data dir: exit 1, naming the path ---------------------------------------------------
@pytest.mark.parametrize("command", ["serve", "gc", "scrub"])
def test_a_data_dir_that_is_a_file(tmp_path: Path, command: str) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    args = serve_args(a_file) if command == "serve" else [command, "--data-dir", str(a_file)]
    one_error_line(stablemirror(*args), f"'{a_file}'", "not a directory", code=1)


@pytest.mark.parametrize("command", ["serve", "gc", "scrub"])
def test_a_data_dir_under_a_file(tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "data"
    args = serve_args(path) if command == "serve" else [command, "--data-dir", str(path)]
    one_error_line(stablemirror(*args), f"'{path}'", code=1)


@pytest.mark.parametrize("command", ["gc", "scrub"])
def test_gc_and_scrub_never_create_a_missing_data_dir(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "dta"
    r = stablemirror(command, "--data-dir", str(missing))
    one_error_line(r, f"'{missing}'", "no such directory", code=1)
    assert not missing.exists()


@pytest.mark.parametrize("command", ["gc", "scrub"])
def test_gc_and_scrub_refuse_a_directory_that_is_no_data_dir(tmp_path: Path,
                                                             command: str) -> None:
    r = stablemirror(command, "--data-dir", str(tmp_path))
    one_error_line(r, f"'{tmp_path}'", "no index.db", code=1)
    assert not (tmp_path / "index.db").exists()


@pytest.mark.parametrize("command", ["serve", "gc", "scrub"])
def test_an_unwritable_data_dir(server: LiveServer, command: str) -> None:
    server.stop()
    d = server.data_dir
    args = serve_args(d) if command == "serve" else [command, "--data-dir", str(d)]
    with unwritable(d):
        r = stablemirror(*args)
    one_error_line(r, f"'{d}'", "not writable", code=1)


def test_serve_refuses_an_unwritable_blobs_dir(server: LiveServer) -> None:
    server.stop()
    blobs = server.data_dir / "blobs"
    with unwritable(blobs):
        r = stablemirror(*serve_args(server.data_dir))
    one_error_line(r, f"'{blobs}'", "not writable", code=1)


def test_serve_creates_a_missing_data_dir_when_its_parent_allows(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path / "data")  # (its log goes next to it: the parent exists)
    srv.start()
    try:
        assert (srv.data_dir / "index.db").is_file()
    finally:
        srv.stop()
