"""Registry notifications on a real server (2 workers, SQLite) with a real receiver
process that verifies every request's HMAC: skopeo pushes, a tag move, deletes, a mount
and a promotion arrive with distribution's fields; a receiver down during a burst gets
every event, once, in order, when it is back; a server killed with a delivery in flight
sends it again after its restart (at least once: the receiver dedupes by id)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.clients import Clients, OciLayout
from tests.support.live import LiveServer
from tests.support.mirror_support import make_image, push_image
from tests.support.release_support import api, ok
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.clients
SECRET = "test-secret-0123456789"
MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WAIT = 30.0  # seconds any awaited delivery may take, at most
KiB = 1024


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(tmp_path_factory.mktemp("receiver"), SECRET)
    r.start()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
             ) -> Iterator[LiveServer]:
    d = tmp_path_factory.mktemp("notify") / "data"
    d.mkdir()
    cfg = d.parent / "notify.yml"
    # Short backoff and lease: the tests await recoveries, they never sleep them out.
    cfg.write_text(json.dumps({"releases": {"namespaces": [
        {"prefix": "kept/", "retention": {"keep_per_line": 1, "keep_days": 0}}]},
        "notifications": {
        "poll_seconds": 0.2, "lease_seconds": 2, "endpoints": [{
            "name": "hooks", "url": receiver.events_url, "secret": SECRET,
            "headers": {"X-Receiver-Token": "token-1"}, "timeout_seconds": 1.5,
            "backoff_seconds": 0.2, "backoff_max_seconds": 1.0, "batch_size": 5}]}}))
    s = LiveServer(d, "--config", str(cfg), workers=2)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clients(registry: LiveServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Clients]:
    c = Clients(tmp_path_factory.mktemp("clients"), registry)
    yield c
    c.close()


def wait_for(what: str, check: Callable[[], bool], server: LiveServer) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {WAIT}s\n{server.log()[-3000:]}")


def of(receiver: WebhookReceiver, repo: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events() if e["target"]["repository"] == repo]


def metric(server: LiveServer, name: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf'^{name}{{endpoint="hooks"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


def skopeo_push(clients: Clients, layout: OciLayout, repo: str, tag: str) -> str:
    img = layout.add_image([16 * KiB])
    layout.tag(tag, img.manifest)
    clients.skopeo("copy", "--dest-tls-verify=false", layout.ref(tag),
                   clients.docker_ref(repo, tag))
    return img.manifest.digest


def test_push_tag_move_delete_mount_and_promotion_arrive_signed(
        registry: LiveServer, receiver: WebhookReceiver, clients: Clients,
        tmp_path: Path) -> None:
    repo = "models/notified"
    layout = OciLayout(tmp_path / "layout")
    version = skopeo_push(clients, layout, repo, "1.0.0")
    first = skopeo_push(clients, layout, repo, "latest")
    moved = skopeo_push(clients, layout, repo, "latest")  # the tag moves to a new manifest
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    config_digest = json.loads(layout.blob_path(moved).read_bytes())["config"]["digest"]
    r = requests.post(f"{registry.url}/v2/models/other/blobs/uploads/",
                      params={"mount": config_digest, "from": repo}, timeout=10)
    assert r.status_code == 201, r.text
    assert requests.delete(f"{registry.url}/v2/{repo}/manifests/latest",
                           timeout=10).status_code == 202
    assert requests.delete(f"{registry.url}/v2/{repo}/manifests/{first}",
                           timeout=10).status_code == 202

    def arrived() -> bool:
        events = of(receiver, repo)
        return len([e for e in events if e["action"] == "delete"]) == 2
    wait_for("the delete events", arrived, registry)
    events = of(receiver, repo)
    got = [(e["action"], e["target"].get("tag", ""), e["target"].get("digest", ""))
           for e in events]
    # 1.0.0 also moved its floating tags 1 and 1.0 (releases): pushes of them too.
    assert got == [("push", "1.0.0", version), ("push", "1", version),
                   ("push", "1.0", version), ("push", "latest", first),
                   ("push", "latest", moved), ("promote", "stable", version),
                   ("delete", "latest", moved), ("delete", "", first)], got
    push = events[0]
    assert push["target"]["mediaType"] == OCI_MANIFEST
    assert push["target"]["size"] == push["target"]["length"] == len(
        layout.blob_path(version).read_bytes())
    assert push["target"]["url"] == f"{registry.url}/v2/{repo}/manifests/{version}"
    request = push["request"]
    assert request["method"] == "PUT" and request["host"] == registry.host
    assert request["addr"].startswith("127.0.0.1") and request["id"]
    assert "skopeo" in request["useragent"].lower() or "containers" in request["useragent"]
    assert push["actor"] == {} and push["source"]["addr"] == registry.host
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", push["timestamp"])
    assert events[5]["request"]["method"] == "POST"  # the promotion, through the admin API
    mounts = of(receiver, "models/other")
    assert [(e["action"], e["target"]["digest"]) for e in mounts] == [
        ("mount", config_digest)]
    assert len({e["id"] for e in receiver.events()}) == len(receiver.events())
    requests_seen = receiver.requests()
    assert all(r["verified"] and r["content_type"] == MEDIA_TYPE for r in requests_seen)
    assert all(r["user_agent"].startswith("stablemirror/") for r in requests_seen)


def test_a_version_removed_by_retention_is_a_delete(
        registry: LiveServer, receiver: WebhookReceiver) -> None:
    repo = "kept/model"
    old = push_image(registry.url, make_image(repo, "1.0.0", layer_sizes=(1024,)))
    push_image(registry.url, make_image(repo, "1.0.1", layer_sizes=(1024,)))
    done = ok(api(registry, repo, "retention", {"dry_run": False}))
    assert [r["version"] for r in done["removed"]] == ["1.0.0"]
    wait_for("the retention delete", lambda: any(
        e["action"] == "delete" for e in of(receiver, repo)), registry)
    deletes = [e for e in of(receiver, repo) if e["action"] == "delete"]
    assert [(e["target"]["digest"], e["target"].get("tag")) for e in deletes] == [
        (old.digest, None)]


def test_a_receiver_down_during_a_burst_misses_nothing(
        registry: LiveServer, receiver: WebhookReceiver) -> None:
    repo = "burst/app"
    receiver.kill()  # down: connections refused
    tags = [f"b{n:02d}" for n in range(12)]
    for tag in tags:
        push_image(registry.url, make_image(repo, tag, layer_sizes=(1024,)))
    wait_for("failed attempts while the receiver is down",
             lambda: metric(registry, "stablemirror_notifications_failed_attempts_total") >= 2,
             registry)
    wait_for("12 pending events", lambda: metric(
        registry, "stablemirror_notifications_pending") == 12, registry)
    assert metric(registry, "stablemirror_notifications_oldest_pending_age_seconds") > 0
    receiver.start()
    wait_for("the burst, once the receiver is back",
             lambda: len(of(receiver, repo)) >= len(tags), registry)
    events = of(receiver, repo)
    assert [e["target"]["tag"] for e in events] == tags  # each once, in order
    assert max(Counter(e["id"] for e in events).values()) == 1
    wait_for("the queue drained", lambda: metric(
        registry, "stablemirror_notifications_pending") == 0, registry)


def test_a_server_killed_mid_delivery_loses_nothing(
        registry: LiveServer, receiver: WebhookReceiver) -> None:
    repo = "crash/app"
    receiver.hold(True)  # takes the request, does not answer
    push_image(registry.url, make_image(repo, "k1", layer_sizes=(1024,)))

    def in_flight() -> bool:
        return any(e["target"]["repository"] == repo for r in receiver.requests() if r["held"]
                   for e in r["body"]["events"])
    wait_for("the delivery in flight", in_flight, registry)
    registry.kill()  # SIGKILL, mid-request
    receiver.hold(False)
    registry.start()
    answered = [r for r in receiver.requests() if not r["held"]]

    def redelivered() -> bool:
        return any(e["target"]["repository"] == repo for r in receiver.requests()[len(
            answered):] if not r["held"] for e in r["body"]["events"])
    wait_for("the event again after the restart", redelivered, registry)
    ids = {e["id"] for e in of(receiver, repo)}
    assert len(ids) == 1  # the same event both times: the receiver can dedupe it
