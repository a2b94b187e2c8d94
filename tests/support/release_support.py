"""Helpers for the release-channel tests (tests/functional/test_releases*.py): versions
pushed with skopeo from an OCI layout, the release admin API over plain HTTP, channel
resolution by HEAD with a Stablemirror-Client-Id, and the release CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.support.clients import Clients, OciLayout
from tests.support.live import LiveServer
from tests.support.mirror_support import MANIFEST_ACCEPT

TIMEOUT = 30
KiB = 1024


def push_versions(clients: Clients, workdir: Path, repo: str, versions: list[str],
                  creds: str | None = None) -> dict[str, str]:
    """One fresh image per version, pushed with `skopeo copy`; version -> digest."""
    layout = OciLayout(workdir / f"layout-{repo.replace('/', '_')}")
    digests = {}
    for version in versions:
        img = layout.add_image([32 * KiB])
        layout.tag(version, img.manifest)
        extra = ["--dest-creds", creds] if creds else []
        clients.skopeo("copy", "--dest-tls-verify=false", *extra, layout.ref(version),
                       clients.docker_ref(repo, version))
        digests[version] = img.manifest.digest
    return digests


def api(server: LiveServer, repo: str, action: str, body: dict[str, Any] | None = None,
        auth: tuple[str, str] | None = None, **params: str) -> requests.Response:
    url = f"{server.url}/api/v1/releases/{repo}/{action}"
    if body is None:
        return requests.get(url, params=params, auth=auth, timeout=TIMEOUT)
    return requests.post(url, json=body, auth=auth, timeout=TIMEOUT)


def ok(r: requests.Response) -> Any:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def resolve(session: requests.Session, base: str, repo: str, channel: str,
            identity: str | None, method: str = "HEAD") -> str:
    """The digest `identity` gets for `repo:channel`."""
    headers = {"Accept": MANIFEST_ACCEPT}
    if identity is not None:
        headers["Stablemirror-Client-Id"] = identity
    r = session.request(method, f"{base}/v2/{repo}/manifests/{channel}", headers=headers,
                        timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    return str(r.headers["Docker-Content-Digest"])


def release_cli(server: LiveServer, *args: str, password: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("STABLEMIRROR_PASSWORD", "STABLEMIRROR_ADMIN_PASSWORD")}
    env["COLUMNS"] = "250"
    if password is not None:
        env["STABLEMIRROR_PASSWORD"] = password
    proc = subprocess.run([sys.executable, "-m", "stablemirror", "release", *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"release {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}\n{server.log()[-3000:]}")
    return proc
