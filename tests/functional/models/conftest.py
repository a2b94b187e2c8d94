"""One real server per module, the real CLI as a subprocess, and what the server logged."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.live import LiveServer
from tests.support.mirror_support import running_server

TIMEOUT = 300


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("models") / "data", workers=2) as s:
        yield s


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablemirror", *args], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def digest_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", line), result.stdout
    return line


class LogCursor:
    """The access-log lines the server wrote since the cursor was made."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.start = len(server.log())

    def lines(self, pattern: str) -> list[str]:
        new = self.server.log()[self.start:]
        return [line for line in new.splitlines() if re.search(pattern, line)]


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under root (hidden entries too)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def push_blob(server: LiveServer, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    if location.startswith("/"):
        location = server.url + location
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=30,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def put_manifest(server: LiveServer, repo: str, tag: str, body: bytes) -> None:
    r = requests.put(f"{server.url}/v2/{repo}/manifests/{tag}", data=body, timeout=30,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
