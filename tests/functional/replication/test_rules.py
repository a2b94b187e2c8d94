"""Replication rules between two stablemirror instances on loopback, and from stablemirror
into Debian's docker-registry: a cron rule's first tick, a manual run through the admin API
(a skopeo-pushed image signed with `stablemirror sign` arrives with its signature and the
same digest), a moved tag follows, a delete propagates, `replicate status` shows the run
and its lag. (`replicate run` into a docker-registry: test_copy.py, beside its servers.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from stablemirror.trust import keys as cosign_keys
from stablemirror.trust.keys import SCRYPT_LEGACY
from tests.support.clients import Clients, OciLayout, require_tool
from tests.support.live import LiveServer
from tests.support.mirror_support import make_image, push_image, running_server
from tests.support.replication_support import assert_image_at, manifest_bytes
from tests.support.trust_support import PASSWORD, cli

TIMEOUT = 30.0


def wait_for(check: object, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stablemirror(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "stablemirror", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
                          env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("region1") / "data") as s:
        # Before the destination starts: its cron rule's first tick copies this.
        push_image(s.url, make_image("cron/app", "v1", (30_000,)))
        yield s


@pytest.fixture(scope="module")
def destination(source: LiveServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("region2")
    config = root / "config.yaml"
    config.write_text(json.dumps({"jobs": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
                                  "replication": {"rules": [
        {"name": "cron-pull", "mode": "pull", "source": source.url,
         "filters": {"repositories": ["cron/*"]}, "trigger": {"cron": "* * * * *"}},
        {"name": "apps", "mode": "pull", "source": source.url,
         "filters": {"repositories": ["apps/*"]}, "delete": "propagate",
         "destination_prefix": "mirror/", "parallel_streams": 2, "chunk_size_mib": 1},
    ]}}))
    with running_server(root / "data", "--config", str(config)) as s:
        yield s


def test_cron_rule_copies_on_its_tick(source: LiveServer, destination: LiveServer) -> None:
    original = manifest_bytes(source.url, "cron/app", "v1")
    wait_for(lambda: manifest_bytes(destination.url, "cron/app", "v1") == original,
             "the cron rule's first run")


def run_rule(destination: LiveServer, rule: str) -> None:
    r = requests.post(f"{destination.url}/api/v1/replication/rules/{rule}/run", json={},
                      timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert isinstance(job, int)

    def done() -> bool:
        rows = {row["rule"]: row for row in requests.get(
            f"{destination.url}/api/v1/replication/status", timeout=10).json()["rules"]}
        row = rows[rule]
        return bool(row["last_finished"] and row["last_finished"] >= row["last_started"]
                    and row["current"] == [] and row["last_started"] > started)

    started = time.time() - 0.01
    wait_for(done, f"rule {rule}'s run")


def test_signed_image_moved_tag_and_delete(source: LiveServer, destination: LiveServer,
                                           tmp_path: Path) -> None:
    clients = Clients(tmp_path / "clients", source)
    layout = OciLayout(tmp_path / "layout")
    built = layout.add_image([2 * 1024 * 1024 + 11, 20_000])
    layout.tag("v1", built.manifest)
    clients.skopeo("copy", layout.ref("v1"), clients.docker_ref("apps/web", "v1"))
    key = tmp_path / "dev.key"  # made here: a `key generate` process costs seconds
    key.write_bytes(cosign_keys.encrypt_private_key(ec.generate_private_key(ec.SECP256R1()),
                                                    PASSWORD.encode(), SCRYPT_LEGACY))
    cli("sign", "--key", str(key), "--identity", "dev@apps",
        f"{source.host}/apps/web:v1")
    sig_tag = f"sha256-{built.manifest.digest.split(':')[1]}.sig"
    signature = manifest_bytes(source.url, "apps/web", sig_tag)
    assert signature is not None

    # Dry run: the plan, nothing copied.
    r = requests.post(f"{destination.url}/api/v1/replication/rules/apps/run",
                      json={"dry_run": True}, timeout=60)
    assert r.status_code == 200, r.text
    assert [c["reference"] for c in r.json()["copied"]] == ["v1"]
    assert r.json()["pending_bytes"] > 2 * 1024 * 1024
    assert manifest_bytes(destination.url, "mirror/apps/web", "v1") is None

    run_rule(destination, "apps")
    assert manifest_bytes(destination.url, "mirror/apps/web", "v1") == built.manifest_bytes
    assert manifest_bytes(destination.url, "mirror/apps/web", sig_tag) == signature
    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw",
                          f"docker://{destination.host}/mirror/apps/web:v1"],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == built.manifest_bytes

    # A moved tag follows; a deleted tag goes.
    moved = push_image(source.url, make_image("apps/web", "v1", (10_000,)))
    push_image(source.url, make_image("apps/web", "old", (10_000,)))
    run_rule(destination, "apps")
    assert_image_at(destination.url, "mirror/apps/web", "v1", moved)
    assert manifest_bytes(destination.url, "mirror/apps/web", "old") is not None
    assert requests.delete(f"{source.url}/v2/apps/web/manifests/old",
                           timeout=10).status_code == 202
    run_rule(destination, "apps")
    assert manifest_bytes(destination.url, "mirror/apps/web", "old") is None
    assert manifest_bytes(destination.url, "mirror/apps/web", "v1") == moved.manifest

    out = stablemirror("replicate", "status", "--url", destination.url).stdout
    assert "apps" in out and "cron-pull" in out and "ok" in out, out
    rows = {row["rule"]: row for row in requests.get(
        f"{destination.url}/api/v1/replication/status", timeout=10).json()["rules"]}
    assert rows["apps"]["lag_seconds"] == 0.0 and rows["apps"]["last_error"] is None
    assert rows["apps"]["artifacts_copied"] >= 2 and rows["apps"]["bytes_copied"] > 2 << 20
    metrics = requests.get(f"{destination.url}/metrics", timeout=10).text
    assert 'stablemirror_replication_artifacts_total{rule="apps"}' in metrics
