"""Replication between real registries on loopback: stablemirror (`hosted`, region 1),
a second stablemirror pulling from it by rules (`destination`, region 2) and Debian's
docker-registry (`reference`). One module so the three servers start once.

* `stablemirror copy` both ways between stablemirror and docker-registry and to/from an OCI
  layout, checked byte for byte and with skopeo; a transfer cut in the middle of a blob
  (source cut mid-range, destination connection reset mid-upload) resumes from the
  destination's offset.
* Rules: a cron rule's first tick; a manual run through the admin API (a skopeo-pushed image
  signed with `stablemirror sign` arrives with its signature and the same digest), a moved
  tag follows, a delete propagates, `replicate status` shows the runs and their lag;
  `replicate run` in-process into a docker-registry.
* Event-triggered replication through the real queue and runner while the destination is
  down (last: it stops and restarts the module's docker-registry)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from stablemirror.cli.copy import copy_app
from stablemirror.cli.replicate import replicate_app
from stablemirror.client.registry import RegistryClient
from stablemirror.compose.replication import ReplicationParts
from stablemirror.events.model import RegistryEvent
from stablemirror.index.db import Database
from stablemirror.index.migrate import upgrade
from stablemirror.index.sql_jobs import SqlJobQueue
from stablemirror.index.sql_replication import SqlReplicationStatus
from stablemirror.jobs.config import JobSettings
from stablemirror.jobs.runner import JobRunner
from stablemirror.oci.digest import Digest
from stablemirror.replication.config import ReplicationSettings
from stablemirror.replication.copier import ImageCopier
from stablemirror.replication.endpoint import TransferSettings
from stablemirror.replication.registry_endpoint import RegistryEndpoint
from stablemirror.replication.trigger import EVENT_KIND
from stablemirror.trust import keys as cosign_keys
from stablemirror.trust.keys import SCRYPT_LEGACY
from tests.support.clients import Clients, OciLayout, ReferenceRegistry, require_tool
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import MiB, make_image, push_image, running_server
from tests.support.oci_http import wait_until
from tests.support.replication_support import (
    assert_image_at,
    blob_bytes,
    manifest_bytes,
    push_index,
    push_referrer,
    push_sig_tag,
)
from tests.support.trust_support import PASSWORD, cli


def copy_here(*args: str) -> str:
    """`stablemirror copy` in this process (the same command, without a Python start-up:
    the first test runs it as a real process)."""
    result = CliRunner().invoke(copy_app, ["copy", "--no-progress", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def copy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "stablemirror", "copy", "--no-progress",
                           *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def test_copy_index_with_signature_and_referrer_to_docker_registry(
        hosted: LiveServer, reference: ReferenceRegistry, tmp_path: Path) -> None:
    """An index (two images, one with a 3 MiB layer moved in 1 MiB ranges and chunks), its
    `.sig` tag and an SBOM referrer arrive at a docker-registry with the same digests; a
    second copy finds the tag unchanged by HEAD and uploads nothing."""
    amd = make_image("c/app", None, (3 * MiB + 17, 40_000))
    arm = make_image("c/app", None, (50_000,))
    index, index_digest = push_index(hosted.url, "c/app", "v1", [amd, arm])
    sig, _ = push_sig_tag(hosted.url, "c/app", index_digest)
    sbom = push_referrer(hosted.url, "c/app", amd)

    src, dst = f"docker://{hosted.host}/c/app:v1", f"docker://{reference.host}/d/app:v1"
    out = copy_cli("--all", "--chunk-mib", "1", "--parallel-streams", "3", src, dst)
    assert out.stdout.strip() == index_digest

    assert manifest_bytes(reference.url, "d/app", "v1") == index
    for img in (amd, arm):
        assert_image_at(reference.url, "d/app", img.digest, img)
    assert manifest_bytes(reference.url, "d/app",
                          f"sha256-{index_digest.split(':')[1]}.sig") == sig
    # docker-registry 2.8 has no referrers API: the copy lists the SBOM in the tag fallback.
    fallback = manifest_bytes(reference.url, "d/app", f"sha256-{amd.digest.split(':')[1]}")
    assert fallback is not None and sbom in [m["digest"] for m in
                                             json.loads(fallback)["manifests"]]
    assert manifest_bytes(reference.url, "d/app", sbom) is not None

    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw", dst],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == index
    pulled = tmp_path / "pulled"
    subprocess.run([skopeo, "copy", "--all", "--src-tls-verify=false", dst, f"oci:{pulled}:v1"],
                   capture_output=True, timeout=120, check=True)
    assert copy_here("--all", src, dst).strip() == index_digest


def test_copy_from_docker_registry_into_stablemirror_one_platform(
        hosted: LiveServer, reference: ReferenceRegistry) -> None:
    """docker-registry -> stablemirror; without --all an index gives the one manifest of
    the asked platform, unchanged; blobs already in another repository are mounted."""
    amd = make_image("e/app", None, (100_000,))
    arm = make_image("e/app", None, (60_000,))
    push_index(reference.url, "e/app", "v2", [amd, arm])
    out = copy_here("--platform", "linux/arm64", f"docker://{reference.host}/e/app:v2",
                    f"docker://{hosted.host}/f/app:v2")
    assert out.strip() == arm.digest
    assert_image_at(hosted.url, "f/app", "v2", arm)


def test_cut_transfer_resumes_from_destination_offset(
        hosted: LiveServer, reference: ReferenceRegistry) -> None:
    """A 6 MiB layer in 1 MiB chunks with 3 ranged streams: the source cuts one range in the
    middle and the destination's connection is reset before the third PATCH. The copy
    resumes from the offset the destination reports, sends at most one chunk more than the
    blob, and the digest is the same."""
    image = make_image("g/big", "v1", (6 * MiB + 5,))
    push_image(reference.url, image)
    layer = image.layers[0]
    chunk = MiB
    with FaultProxy(reference.host, "source") as src_proxy, \
            FaultProxy(hosted.host, "destination") as dst_proxy:
        src_proxy.set("cut", after=300_000, match=f"/blobs/{layer}")

        armed: list[int] = []

        def progress(digest: Digest, done: int, total: int) -> None:
            if str(digest) == layer and done == 2 * chunk and not armed:
                armed.append(done)  # once: the cut happens mid-blob, after two chunks
                dst_proxy.set("reset", match="/blobs/uploads/", methods=("PATCH",), times=1)

        async def run() -> RegistryEndpoint:
            src = RegistryEndpoint(RegistryClient(src_proxy.host))
            dst = RegistryEndpoint(RegistryClient(dst_proxy.host))
            settings = TransferSettings(chunk_size=chunk, parallel_streams=3,
                                        backoff_seconds=0.05)
            try:
                await ImageCopier(src, dst, settings, progress=progress).copy(
                    "g/big", "v1", "h/big")
            finally:
                await src.close()
                await dst.close()
            return dst

        dst = asyncio.run(run())
        cut = [e for e in src_proxy.requests(f"/blobs/{layer}") if e.fault == "cut"]
        reset = [e for e in dst_proxy.requests("/blobs/uploads/") if e.fault == "reset"]
    assert cut and reset, (src_proxy.summary(), dst_proxy.summary())
    upload = next(u for u in dst.uploads if str(u.reader.digest) == layer)
    assert upload.resumes >= 1
    size = len(image.blobs[layer])
    assert size <= upload.sent <= size + chunk, upload.sent
    assert blob_bytes(hosted.url, "h/big", layer) == image.blobs[layer]
    assert manifest_bytes(hosted.url, "h/big", "v1") == image.manifest


def test_copy_to_and_from_an_oci_layout(hosted: LiveServer, tmp_path: Path) -> None:
    """registry -> oci:DIR:TAG -> registry, digests preserved; skopeo reads the layout."""
    image = make_image("l/app", "v3", (200_000,))
    push_image(hosted.url, image)
    layout = tmp_path / "layout"
    copy_here(f"docker://{hosted.host}/l/app:v3", f"oci:{layout}:v3")
    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{layout}:v3"],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == image.manifest
    out = copy_here(f"oci:{layout}:v3", f"docker://{hosted.host}/l/back:v3")
    assert out.strip() == image.digest
    assert_image_at(hosted.url, "l/back", "v3", image)
    assert os.path.exists(layout / "blobs" / "sha256" / image.layers[0].split(":")[1])


def replicate_here(*args: str) -> str:
    result = CliRunner().invoke(replicate_app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_replicate_run_into_docker_registry(hosted: LiveServer,
                                            reference: ReferenceRegistry,
                                            tmp_path: Path) -> None:
    """`replicate run` in-process on the source's data dir: a push rule into a
    docker-registry (tags filtered by a SemVer range)."""
    wanted = push_image(hosted.url, make_image("to-reg/app", "1.2.0", (40_000,)))
    push_image(hosted.url, make_image("to-reg/app", "0.9.0", (40_000,)))
    config = tmp_path / "push.yaml"
    config.write_text(json.dumps({"listen": hosted.host, "replication": {"rules": [
        {"name": "to-reg", "destination": f"http://{reference.host}",
         "filters": {"repositories": ["to-reg/*"], "tags": "semver:>=1.0.0"}}]}}))
    out = replicate_here("run", "to-reg", "--config", str(config),
                         "--data-dir", str(hosted.data_dir))
    assert json.loads(out)["copied"][0]["reference"] == "1.2.0", out
    assert_image_at(reference.url, "to-reg/app", "1.2.0", wanted)
    assert manifest_bytes(reference.url, "to-reg/app", "0.9.0") is None


TIMEOUT = 30.0


@pytest.fixture(scope="module")
def destination(hosted: LiveServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[LiveServer]:
    """A second region pulling from `hosted` by rules."""
    # Before the destination starts: its cron rule's first tick copies this.
    push_image(hosted.url, make_image("cron/app", "v1", (30_000,)))
    root = tmp_path_factory.mktemp("region2")
    config = root / "config.yaml"
    config.write_text(json.dumps({"jobs": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
                                  "replication": {"rules": [
        {"name": "cron-pull", "mode": "pull", "source": hosted.url,
         "filters": {"repositories": ["cron/*"]}, "trigger": {"cron": "* * * * *"}},
        {"name": "apps", "mode": "pull", "source": hosted.url,
         "filters": {"repositories": ["apps/*"]}, "delete": "propagate",
         "destination_prefix": "mirror/", "parallel_streams": 2, "chunk_size_mib": 1},
        {"name": "releases", "mode": "pull", "source": hosted.url,
         "filters": {"repositories": ["rel/*"], "channels": ["stable"]}},
    ]}}))
    with running_server(root / "data", "--config", str(config)) as s:
        yield s


def test_cron_rule_copies_on_its_tick(hosted: LiveServer, destination: LiveServer) -> None:
    original = manifest_bytes(hosted.url, "cron/app", "v1")
    wait_until(lambda: manifest_bytes(destination.url, "cron/app", "v1") == original,
               TIMEOUT, "the cron rule's first run")


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
    wait_until(done, TIMEOUT, f"rule {rule}'s run")


def test_signed_image_moved_tag_and_delete(hosted: LiveServer, destination: LiveServer,
                                           tmp_path: Path) -> None:
    clients = Clients(tmp_path / "clients", hosted)
    layout = OciLayout(tmp_path / "layout")
    built = layout.add_image([2 * 1024 * 1024 + 11, 20_000])
    layout.tag("v1", built.manifest)
    clients.skopeo("copy", layout.ref("v1"), clients.docker_ref("apps/web", "v1"))
    key = tmp_path / "dev.key"  # made here: a `key generate` process costs seconds
    key.write_bytes(cosign_keys.encrypt_private_key(ec.generate_private_key(ec.SECP256R1()),
                                                    PASSWORD.encode(), SCRYPT_LEGACY))
    cli("sign", "--key", str(key), "--identity", "dev@apps",
        f"{hosted.host}/apps/web:v1")
    sig_tag = f"sha256-{built.manifest.digest.split(':')[1]}.sig"
    signature = manifest_bytes(hosted.url, "apps/web", sig_tag)
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
    moved = push_image(hosted.url, make_image("apps/web", "v1", (10_000,)))
    push_image(hosted.url, make_image("apps/web", "old", (10_000,)))
    run_rule(destination, "apps")
    assert_image_at(destination.url, "mirror/apps/web", "v1", moved)
    assert manifest_bytes(destination.url, "mirror/apps/web", "old") is not None
    assert requests.delete(f"{hosted.url}/v2/apps/web/manifests/old",
                           timeout=10).status_code == 202
    run_rule(destination, "apps")
    assert manifest_bytes(destination.url, "mirror/apps/web", "old") is None
    assert manifest_bytes(destination.url, "mirror/apps/web", "v1") == moved.manifest

    out = replicate_here("status", "--url", destination.url)
    assert "apps" in out and "cron-pull" in out and "ok" in out, out
    rows = {row["rule"]: row for row in requests.get(
        f"{destination.url}/api/v1/replication/status", timeout=10).json()["rules"]}
    assert rows["apps"]["lag_seconds"] == 0.0 and rows["apps"]["last_error"] is None
    assert rows["apps"]["artifacts_copied"] >= 2 and rows["apps"]["bytes_copied"] > 2 << 20
    metrics = requests.get(f"{destination.url}/metrics", timeout=10).text
    assert 'stablemirror_replication_artifacts_total{rule="apps"}' in metrics


def test_release_channel_pointer_follows(hosted: LiveServer, destination: LiveServer) -> None:
    """Between two stablemirrors a channel is a pointer, moved at the destination through
    its release API (not pushed as a tag); `filters.channels` copies only its versions."""
    v1 = push_image(hosted.url, make_image("rel/app", "1.0.0", (10_000,)))
    push_image(hosted.url, make_image("rel/app", "1.1.0-beta.1", (10_000,)))
    r = requests.post(f"{hosted.url}/api/v1/releases/rel/app/promote",
                      json={"version": "1.0.0", "channel": "stable"}, timeout=10)
    assert r.status_code == 200, r.text
    run_rule(destination, "releases")
    doc = requests.get(f"{destination.url}/api/v1/releases/rel/app/versions", timeout=10)
    assert doc.status_code == 200, doc.text
    assert [e["digest"] for e in doc.json()["channels"]["stable"]] == [v1.digest]
    assert manifest_bytes(destination.url, "rel/app", "stable") == v1.manifest
    assert manifest_bytes(destination.url, "rel/app", "1.1.0-beta.1") is None


async def drain(runner: JobRunner, queue: SqlJobQueue) -> None:
    """Tick the runner until no event job is unfinished (bounded: 30 s)."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        await runner.tick()
        await asyncio.sleep(0.05)
        unfinished = [j for s in ("queued", "running", "failed")
                      for j in await queue.list(s, EVENT_KIND)]  # type: ignore[arg-type]
        if not unfinished:
            return
    raise AssertionError(f"event jobs left: {await queue.list(kind=EVENT_KIND)}")


def test_event_burst_while_destination_is_down(hosted: LiveServer,
                                               reference: ReferenceRegistry,
                                               tmp_path: Path) -> None:
    images = [push_image(hosted.url, make_image("ev/app", f"v{i}", (20_000,)))
              for i in range(4)]
    settings = ReplicationSettings.model_validate({"rules": [{
        "name": "to-reg", "destination": f"http://{reference.host}",
        "filters": {"repositories": ["ev/*"]}, "trigger": {"event": True},
        "delete": "propagate"}]})
    url = f"sqlite:///{tmp_path / 'index.db'}"
    upgrade(url)

    async def go() -> None:
        db = Database(url)
        queue = SqlJobQueue(db, max_attempts=20, backoff_seconds=0.1,
                            backoff_max_seconds=0.4)
        parts = ReplicationParts(settings, SqlReplicationStatus(db), queue, hosted.host)
        runner = JobRunner(queue, JobSettings(concurrency=4), "test-replica")
        runner.handle(EVENT_KIND, parts.handle_event)
        try:
            reference.stop()
            for img in images:
                await parts.sinks()[0].accept(RegistryEvent(
                    "push", "ev/app", digest=img.digest, tag=img.tag or ""))
            for _ in range(10):  # attempts fail while the destination is down
                await runner.tick()
                await asyncio.sleep(0.1)
            failed = await queue.list("failed", EVENT_KIND)
            assert failed and all(j.last_error for j in failed), failed
            rows = {r["rule"]: r for r in await parts.status_rows()}
            assert rows["to-reg"]["lag_seconds"] > 0  # events waiting
            reference.start()
            await drain(runner, queue)
            for img in images:
                assert_image_at(reference.url, "ev/app", img.tag or "", img)
            rows = {r["rule"]: r for r in await parts.status_rows()}
            assert rows["to-reg"]["lag_seconds"] == 0.0, rows

            # A delete at the source, as its event: gone at the destination.
            r = await asyncio.to_thread(
                requests.delete, f"{hosted.url}/v2/ev/app/manifests/{images[0].digest}",
                timeout=10)
            assert r.status_code == 202, r.text
            await parts.sinks()[0].accept(RegistryEvent("delete", "ev/app",
                                                        digest=images[0].digest))
            await drain(runner, queue)
            assert manifest_bytes(reference.url, "ev/app", images[0].digest) is None
            assert manifest_bytes(reference.url, "ev/app", "v1") == images[1].manifest
        finally:
            await runner.stop()
            await db.close()

    asyncio.run(go())
